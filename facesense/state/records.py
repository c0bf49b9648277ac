"""Job records: a Redis hash per job (live state), a JSON copy in object storage (history)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable

import redis as redis_lib

from facesense.errors import JobNotFound, ObjectNotFound
from facesense.state import joblist, pace, redis_keys
from facesense.state.status import COUNTERS, FINISHED, JobStatus, new_job_id, now, valid_id
from facesense.storage import Store, layout

log = logging.getLogger(__name__)

# Move to a new status unless the job already finished (a late shard can't resurrect it);
# the fields that go with the move are written in the same step, so no reader sees one alone.
# A move to a final status also leaves the active index and counts the end once, atomically.
# KEYS: the job's hash, the active index, the finished counts.
# ARGV: job id, status, final (0/1), k, k finished states, then field/value pairs.
_SET_STATUS = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
cur = cjson.decode(cur)
local k = tonumber(ARGV[4])
for i = 5, 4 + k do if ARGV[i] == cur then return 0 end end
redis.call('HSET', KEYS[1], 'status', cjson.encode(ARGV[2]))
for i = 5 + k, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[3] == '1' then
  local kind = redis.call('HGET', KEYS[1], 'type')
  kind = kind and cjson.decode(kind) or 'None'
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[3], kind .. ':' .. ARGV[2], 1)
end
return 1
"""


def finite(value):
    """value with every non-finite float (NaN, Infinity) replaced by None, at any depth: no
    browser's JSON.parse takes them (a diverged run's metrics), so no record holds one."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value, **kwargs) -> str:
    """Strict JSON text: non-finite floats become null, never a bare NaN."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


class JobRecords:
    """Create, read and update job records; Redis is the live copy, the store keeps finals."""

    def __init__(self, redis: redis_lib.Redis, store: Store, ttl_s: int = 30 * 86400,
                 on_finished: Callable[[str], None] | None = None):
        self.redis, self.store, self.ttl_s = redis, store, ttl_s
        self.on_finished = on_finished  # queues the webhook of a job with a callback_url
        self._set_status = redis.register_script(_SET_STATUS)

    def create(self, job_type: str, job_id: str | None = None, **fields) -> dict:
        """A new queued job record."""
        job_id = job_id or new_job_id()
        record = {"id": job_id, "type": job_type, "status": JobStatus.QUEUED.value,
                  "created_at": now(), "started_at": None, "finished_at": None, "error": None,
                  **dict.fromkeys(COUNTERS, 0), **fields}
        pipe = self.redis.pipeline()
        pipe.hset(redis_keys.job(job_id), mapping={k: dumps(v) for k, v in record.items()})
        pipe.expire(redis_keys.job(job_id), self.ttl_s)
        pipe.sadd(redis_keys.ACTIVE, job_id)
        for index in joblist.indexes(record):  # trimmed as they grow: expired ids leave them
            pipe.zadd(index, {job_id: record["created_at"]})
            pipe.zremrangebyscore(index, "-inf", record["created_at"] - self.ttl_s)
            pipe.expire(index, self.ttl_s)
        pipe.execute()
        return record

    def get(self, job_id: str) -> dict:
        """The live record, or the final one from storage once Redis forgot it."""
        if not valid_id(job_id):  # never let an odd id name a storage key (too long, '..')
            raise JobNotFound(f"no job {job_id[:80]!r}")
        raw = self.redis.hgetall(redis_keys.job(job_id))
        if raw:
            return {k.decode(): json.loads(v) for k, v in raw.items()}
        try:
            return json.loads(self.store.get(layout.job_record(job_id)))
        except (ObjectNotFound, ValueError):
            raise JobNotFound(f"no job {job_id!r}") from None

    def exists(self, job_id: str) -> bool:
        """True if Redis holds the job."""
        return valid_id(job_id) and bool(self.redis.exists(redis_keys.job(job_id)))

    def update(self, job_id: str, **fields) -> None:
        """Set some fields of a live record."""
        self.redis.hset(redis_keys.job(job_id), mapping={k: dumps(v) for k, v in fields.items()})

    def replicated(self, job_id: str, timeout_ms: int) -> bool:
        """True once a replica holds every write made so far to this Redis (WAIT 1); False
        after timeout_ms without one (then a failover could lose them)."""
        # WAIT covers this connection's writes: touching the record first orders every earlier
        # write (a task message sent on the broker's connection too) before the one waited for
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.expire(redis_keys.job(job_id), self.ttl_s).wait(1, timeout_ms)
            return pipe.execute()[-1] >= 1

    def get_field(self, job_id: str, name: str):
        """One field of a live record (None if absent): cheap enough to check every batch."""
        raw = self.redis.hget(redis_keys.job(job_id), name)
        return None if raw is None else json.loads(raw)

    def set_status(self, job_id: str, status: JobStatus, notify: bool = True, **fields) -> bool:
        """Move to status (with fields, atomically) unless already finished; returns if moved.

        notify=False leaves the webhook to whoever completes the record later (a cancelled
        scoring job's partial results are merged by a worker, which then calls announce_finished).
        """
        if status.finished:
            fields["finished_at"] = now()
        elif status is JobStatus.RUNNING:
            fields["started_at"] = now()
        pairs = [x for k, v in fields.items() for x in (k, dumps(v))]
        moved = bool(self._set_status(
            keys=[redis_keys.job(job_id), redis_keys.ACTIVE, redis_keys.FINISHED_COUNTS],
            args=[job_id, status.value, int(status.finished), len(FINISHED), *FINISHED, *pairs]))
        if moved and status.finished and notify:
            self.announce_finished(job_id)
        return moved

    def announce_finished(self, job_id: str) -> None:
        """The one hook every final status passes: queue the job's webhook if it has one."""
        if self.on_finished is None or not self.get_field(job_id, "callback_url"):
            return
        try:
            self.on_finished(job_id)
        except Exception as e:  # a broker hiccup must not undo or hide the status change
            log.warning("job %s: could not queue its webhook: %s", job_id, e)

    def active(self) -> list[str]:
        """Ids of the jobs not yet finished."""
        return sorted(i.decode() for i in self.redis.smembers(redis_keys.ACTIVE))

    def forget_active(self, job_id: str) -> None:
        """Drop a job from the active index (it finished, or Redis forgot its record)."""
        self.redis.srem(redis_keys.ACTIVE, job_id)

    def recent(self, limit: int = 20, offset: int = 0, owner: str | None = None) -> list[dict]:
        """Newest jobs first (only owner's, if given), read in one round trip; the index holds
        the jobs Redis still keeps (older ones are found by id, from their archived record)."""
        index = redis_keys.owned(owner) if owner else redis_keys.RECENT
        ids = [i.decode() for i in self.redis.zrevrange(index, offset, offset + limit - 1)]
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(redis_keys.job(job_id))
            raws = pipe.execute()
        out, gone = [], []
        for job_id, raw in zip(ids, raws, strict=True):
            if raw:
                out.append({k.decode(): json.loads(v) for k, v in raw.items()})
            else:
                gone.append(job_id)
        if gone:  # expired before the index was trimmed past them
            self.redis.zrem(index, *gone)
        return out

    def archive(self, job_id: str) -> dict:
        """Write the final record to object storage, so history outlives Redis."""
        record = self.get(job_id)
        self.store.put(layout.job_record(job_id), dumps(record, indent=2).encode())
        return record


def public_record(record: dict) -> dict:
    """A job record as the API and webhooks show it: counters grouped under progress."""
    out = {k: v for k, v in record.items() if k not in COUNTERS}
    out["progress"] = {k: record.get(k, 0) for k in COUNTERS}
    out["timing"] = pace.timing(record)  # rate and time left, for the dashboard and --wait
    return out
