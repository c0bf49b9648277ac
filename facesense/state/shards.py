"""Shard accounting: count a shard's rows exactly once, its deliveries, and poison images."""

from __future__ import annotations

import json

import redis as redis_lib

from facesense.state import redis_keys
from facesense.state.status import JobStatus

# Count a shard once: SETBIT returns the old bit, so only the first delivery adds its counts.
# The bitmap costs one bit per shard, and a shard delivered just once leaves no delivery note
# (only redelivered shards keep theirs, for the record), so Redis memory stays flat as jobs grow.
# A job already stopped (cancelled, failed) counts nothing more, so its partial results stay
# exact. ARGV: index, done, failed, ttl, then the stopped statuses as the record holds them.
_COUNT_SHARD = """
local status = redis.call('HGET', KEYS[1], 'status')
for i = 5, #ARGV do
  if status == ARGV[i] then
    return {0, tonumber(redis.call('HGET', KEYS[1], 'shards_done') or '0')}
  end
end
local first = redis.call('SETBIT', KEYS[2], ARGV[1], 1) == 0
redis.call('ZREM', KEYS[4], ARGV[1])  -- counted: no longer a pick the watchdog watches
if first then
  if redis.call('HGET', KEYS[3], ARGV[1]) == '1' then redis.call('HDEL', KEYS[3], ARGV[1]) end
  redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'shards_done', 1)
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {first and 1 or 0, tonumber(redis.call('HGET', KEYS[1], 'shards_done') or '0')}
"""

_STOPPED = [json.dumps(s) for s in (JobStatus.CANCELLED.value, JobStatus.FAILED.value)]

# The image in flight when the last one-at-a-time delivery died joins the shard's poison set.
_CONVICT = """
local died_at = redis.call('HGET', KEYS[1], ARGV[1])
if died_at then
  redis.call('SADD', KEYS[2], died_at)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return redis.call('SMEMBERS', KEYS[2])
"""


class ShardBook:
    """Per-shard bookkeeping of scoring jobs, each step atomic in Redis."""

    def __init__(self, redis: redis_lib.Redis, ttl_s: int = 30 * 86400):
        self.redis, self.ttl_s = redis, ttl_s
        self._count = redis.register_script(_COUNT_SHARD)
        self._convict = redis.register_script(_CONVICT)

    def count(self, job_id: str, index: int, done: int, failed: int) -> tuple[bool, int]:
        """Count one shard's images exactly once; returns (first time?, shards counted)."""
        first, counted = self._count(keys=[redis_keys.job(job_id), redis_keys.shard_bits(job_id),
                                           redis_keys.attempts(job_id),
                                           redis_keys.sched_picked(job_id)],
                                     args=[index, done, failed, self.ttl_s, *_STOPPED])
        return bool(first), int(counted)

    def is_counted(self, job_id: str, index: int) -> bool:
        """True once a shard's rows are counted."""
        return bool(self.redis.getbit(redis_keys.shard_bits(job_id), index))

    def uncounted(self, job_id: str, shards: int) -> list[int]:
        """Indexes of the shards not yet counted."""
        bits = self.redis.get(redis_keys.shard_bits(job_id)) or b""
        return [i for i in range(shards)
                if not (i // 8 < len(bits) and bits[i // 8] >> (7 - i % 8) & 1)]

    def count_attempt(self, job_id: str, index: int, step: int = 1) -> int:
        """Count one delivery of a shard (step -1 takes back one that failed cleanly)."""
        key = redis_keys.attempts(job_id)
        attempts, _ = self.redis.pipeline().hincrby(key, str(index), step) \
            .expire(key, self.ttl_s).execute()
        return int(attempts)

    def attempts(self, job_id: str) -> dict[int, int]:
        """Deliveries so far, by shard index: shards not yet counted, and counted ones that
        took more than one (a shard counted at its first delivery is left out)."""
        raw = self.redis.hgetall(redis_keys.attempts(job_id))
        return {int(k): int(v) for k, v in raw.items()}

    def note_in_flight(self, job_id: str, index: int, position: int | None) -> None:
        """Note which image of a shard scored one at a time is in flight (None: none is)."""
        key = redis_keys.in_flight(job_id)
        if position is None:
            self.redis.hdel(key, str(index))
        else:
            self.redis.pipeline().hset(key, str(index), position).expire(key, self.ttl_s).execute()

    def convict_in_flight(self, job_id: str, index: int) -> set[int]:
        """Add the image in flight when the last delivery died to the shard's poison images;
        returns all the shard's poison positions so far."""
        found = self._convict(keys=[redis_keys.in_flight(job_id), redis_keys.poison(job_id, index)],
                              args=[index, self.ttl_s])
        return {int(p) for p in found}
