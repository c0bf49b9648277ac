"""Job records: a Redis hash per job (live state), a JSON copy in object storage (history)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from enum import StrEnum

import redis as redis_lib

from facesense.errors import JobNotFound, ObjectNotFound
from facesense.store import Store

log = logging.getLogger(__name__)
KEY_PREFIX = "facesense:"
RECENT = KEY_PREFIX + "jobs"  # sorted set: job id scored by creation time
ACTIVE = KEY_PREFIX + "active"  # set: ids of queued and running jobs, for the watchdog
FINISHED_COUNTS = KEY_PREFIX + "finished"  # hash: "<type>:<status>" -> jobs ended so (metrics)
COUNTERS = ("total", "done", "failed", "shards", "shards_done")


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True once nothing more will happen to the job."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


FINISHED = [s.value for s in JobStatus if s.finished]

# Count a shard once: SETBIT returns the old bit, so only the first delivery adds its counts.
# The bitmap costs one bit per shard, so Redis memory stays flat as jobs grow.
# A job already finished (cancelled) counts nothing more, so its partial results stay exact.
_COUNT_SHARD = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == '"cancelled"' or status == '"failed"' then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'shards_done') or '0')}
end
local first = redis.call('SETBIT', KEYS[2], ARGV[1], 1) == 0
if first then
  redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'shards_done', 1)
end
return {first and 1 or 0, tonumber(redis.call('HGET', KEYS[1], 'shards_done') or '0')}
"""

# Move to a new status unless the job already finished (a late shard can't resurrect it);
# the fields that go with the move are written in the same step, so no reader sees one alone.
# ARGV: status, number of finished states k, k finished states, then field/value pairs.
_SET_STATUS = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
cur = cjson.decode(cur)
local k = tonumber(ARGV[2])
for i = 3, 2 + k do if ARGV[i] == cur then return 0 end end
redis.call('HSET', KEYS[1], 'status', cjson.encode(ARGV[1]))
for i = 3 + k, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Extend (ttl > 0) or drop (ttl 0) a lease, but only for the owner that holds it.
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) else redis.call('DEL', KEYS[1]) end
return 1
"""


def owned(owner: str) -> str:
    """The sorted set of one API key's jobs, scored by creation time."""
    return f"{RECENT}:owner:{owner}"


def new_job_id() -> str:
    """A time-sortable unique id: creation time in hex, then random."""
    return f"{int(time.time() * 1000):012x}{uuid.uuid4().hex[:12]}"


def now() -> float:
    """Unix time, the one clock job records use."""
    return round(time.time(), 3)


class JobRecords:
    """Create, read and update job records; Redis is the live copy, the store keeps finals."""

    def __init__(self, redis: redis_lib.Redis, store: Store, ttl_s: int = 30 * 86400,
                 on_finished: Callable[[str], None] | None = None):
        self.redis, self.store, self.ttl_s = redis, store, ttl_s
        self.on_finished = on_finished  # queues the webhook of a job with a callback_url
        self._count_shard = redis.register_script(_COUNT_SHARD)
        self._set_status = redis.register_script(_SET_STATUS)
        self._renew = redis.register_script(_RENEW_LEASE)

    @staticmethod
    def key(job_id: str) -> str:
        """The Redis hash of a job."""
        return f"{KEY_PREFIX}job:{job_id}"

    def create(self, job_type: str, job_id: str | None = None, **fields) -> dict:
        """A new queued job record."""
        job_id = job_id or new_job_id()
        record = {"id": job_id, "type": job_type, "status": JobStatus.QUEUED.value,
                  "created_at": now(), "started_at": None, "finished_at": None, "error": None,
                  **{c: 0 for c in COUNTERS}, **fields}
        pipe = self.redis.pipeline()
        pipe.hset(self.key(job_id), mapping={k: json.dumps(v) for k, v in record.items()})
        pipe.expire(self.key(job_id), self.ttl_s)
        pipe.zadd(RECENT, {job_id: record["created_at"]})
        pipe.sadd(ACTIVE, job_id)
        if record.get("owner"):  # the API key's name (never the key): its own jobs, listable
            pipe.zadd(owned(record["owner"]), {job_id: record["created_at"]})
        pipe.execute()
        return record

    def get(self, job_id: str) -> dict:
        """The live record, or the final one from storage once Redis forgot it."""
        raw = self.redis.hgetall(self.key(job_id)) if _valid_id(job_id) else {}
        if raw:
            return {k.decode(): json.loads(v) for k, v in raw.items()}
        try:
            return json.loads(self.store.get(f"jobs/{job_id}/job.json"))
        except (ObjectNotFound, ValueError):
            raise JobNotFound(f"no job {job_id!r}") from None

    def exists(self, job_id: str) -> bool:
        """True if Redis holds the job."""
        return _valid_id(job_id) and bool(self.redis.exists(self.key(job_id)))

    def update(self, job_id: str, **fields) -> None:
        """Set some fields of a live record."""
        self.redis.hset(self.key(job_id), mapping={k: json.dumps(v) for k, v in fields.items()})

    def set_status(self, job_id: str, status: JobStatus, notify: bool = True, **fields) -> bool:
        """Move to status (with fields, atomically) unless already finished; returns if moved.

        notify=False leaves the webhook to whoever completes the record later (a cancelled
        scoring job's partial results are merged by a worker, which then calls finished()).
        """
        if status.finished:
            fields["finished_at"] = now()
        elif status is JobStatus.RUNNING:
            fields["started_at"] = now()
        pairs = [x for k, v in fields.items() for x in (k, json.dumps(v))]
        moved = bool(self._set_status(keys=[self.key(job_id)],
                                      args=[status.value, len(FINISHED), *FINISHED, *pairs]))
        if moved and status.finished:
            kind = self.get_field(job_id, "type")
            with self.redis.pipeline() as pipe:  # moved once per job: each end is counted once
                pipe.srem(ACTIVE, job_id).hincrby(FINISHED_COUNTS, f"{kind}:{status.value}")
                pipe.execute()
            if notify:
                self.finished(job_id)
        return moved

    def finished(self, job_id: str) -> None:
        """The one hook every final status passes: queue the job's webhook if it has one."""
        if self.on_finished is None or not self.get_field(job_id, "callback_url"):
            return
        try:
            self.on_finished(job_id)
        except Exception as e:  # a broker hiccup must not undo or hide the status change
            log.warning("job %s: could not queue its webhook: %s", job_id, e)

    def active(self) -> list[str]:
        """Ids of the jobs not yet finished."""
        return sorted(i.decode() for i in self.redis.smembers(ACTIVE))

    def forget_active(self, job_id: str) -> None:
        """Drop a job from the active index (it finished, or Redis forgot its record)."""
        self.redis.srem(ACTIVE, job_id)

    def _bits(self, job_id: str) -> str:
        return f"{KEY_PREFIX}job:{job_id}:shards"

    def uncounted_shards(self, job_id: str, shards: int) -> list[int]:
        """Indexes of the shards not yet counted."""
        bits = self.redis.get(self._bits(job_id)) or b""
        return [i for i in range(shards)
                if not (i // 8 < len(bits) and bits[i // 8] >> (7 - i % 8) & 1)]

    def shard_counted(self, job_id: str, index: int) -> bool:
        """True once a shard's rows are counted."""
        return bool(self.redis.getbit(self._bits(job_id), index))

    def count_attempt(self, job_id: str, index: int, step: int = 1) -> int:
        """Count one delivery of a shard (step -1 takes back one that failed cleanly)."""
        key = f"{self.key(job_id)}:attempts"
        attempts = self.redis.hincrby(key, str(index), step)
        self.redis.expire(key, self.ttl_s)
        return int(attempts)

    def scoring_alone(self, job_id: str, index: int, position: int | None) -> None:
        """Note which image of a shard scored one at a time is in flight (None: none is)."""
        key = f"{self.key(job_id)}:alone"
        if position is None:
            self.redis.hdel(key, str(index))
        else:
            self.redis.hset(key, str(index), position)
            self.redis.expire(key, self.ttl_s)

    def take_poison(self, job_id: str, index: int) -> set[int]:
        """Positions in a shard of images a worker died on: the one in flight when the last
        delivery that scored them alone died joins those found before."""
        alone, poison = f"{self.key(job_id)}:alone", f"{self.key(job_id)}:poison:{index}"
        died_at = self.redis.hget(alone, str(index))
        if died_at is not None:
            self.redis.sadd(poison, int(died_at))
            self.redis.expire(poison, self.ttl_s)
            self.redis.hdel(alone, str(index))
        return {int(p) for p in self.redis.smembers(poison)}

    def attempts(self, job_id: str) -> dict[int, int]:
        """Deliveries counted so far, by shard index."""
        raw = self.redis.hgetall(f"{self.key(job_id)}:attempts")
        return {int(k): int(v) for k, v in raw.items()}

    def mark_requeued(self, job_id: str, name: str, ttl_s: int) -> bool:
        """Note that the work under lease name was put back on the queue; False if it already was."""
        return bool(self.redis.set(f"{self.key(job_id)}:requeued:{name}", 1, nx=True, ex=ttl_s))

    def clear_requeued(self, job_id: str, name: str) -> None:
        """A worker took the work up: if it dies too, the work may be requeued again."""
        self.redis.delete(f"{self.key(job_id)}:requeued:{name}")

    def count_shard(self, job_id: str, index: int, done: int, failed: int) -> tuple[bool, int]:
        """Count one shard's images exactly once; returns (first time?, shards counted)."""
        bits = self._bits(job_id)
        first, counted = self._count_shard(keys=[self.key(job_id), bits],
                                           args=[index, done, failed])
        self.redis.expire(bits, self.ttl_s)
        return bool(first), int(counted)

    def get_field(self, job_id: str, name: str):
        """One field of a live record (None if absent): cheap enough to check every batch."""
        raw = self.redis.hget(self.key(job_id), name)
        return None if raw is None else json.loads(raw)

    def acquire_lease(self, job_id: str, owner: str, ttl_s: int, name: str = "lease") -> bool:
        """Take a lease on the job (or on a part of it: name) unless another owner holds it."""
        if self.redis.set(f"{self.key(job_id)}:{name}", owner, nx=True, ex=ttl_s):
            return True
        return self.renew_lease(job_id, owner, ttl_s, name)  # re-entrant for its owner

    def renew_lease(self, job_id: str, owner: str, ttl_s: int, name: str = "lease") -> bool:
        """Extend the lease if owner still holds it."""
        return bool(self._renew(keys=[f"{self.key(job_id)}:{name}"], args=[owner, ttl_s]))

    def release_lease(self, job_id: str, owner: str, name: str = "lease") -> None:
        """Give the lease up if owner holds it."""
        self._renew(keys=[f"{self.key(job_id)}:{name}"], args=[owner, 0])

    def leased(self, job_id: str, name: str = "lease") -> bool:
        """True while some live worker holds the lease."""
        return bool(self.redis.exists(f"{self.key(job_id)}:{name}"))

    def recent(self, limit: int = 20, offset: int = 0, owner: str | None = None) -> list[dict]:
        """Newest jobs first (only owner's, if given); expired ids are dropped from the index."""
        index = owned(owner) if owner else RECENT
        ids = [i.decode() for i in self.redis.zrevrange(index, offset, offset + limit - 1)]
        out = []
        for job_id in ids:
            try:
                out.append(self.get(job_id))
            except JobNotFound:
                self.redis.zrem(index, job_id)
        return out

    def archive(self, job_id: str) -> dict:
        """Write the final record to object storage, so history outlives Redis."""
        record = self.get(job_id)
        self.store.put(f"jobs/{job_id}/job.json", json.dumps(record, indent=2).encode())
        return record


def public_record(record: dict) -> dict:
    """A job record as the API and webhooks show it: counters grouped under progress."""
    out = {k: v for k, v in record.items() if k not in COUNTERS}
    out["progress"] = {k: record.get(k, 0) for k in COUNTERS}
    return out


def _valid_id(job_id: str) -> bool:
    """Job ids are short hex strings; anything else can't name a job (or a storage key)."""
    return 0 < len(job_id) <= 64 and all(c in "0123456789abcdef" for c in job_id)
