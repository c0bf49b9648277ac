"""The fair scheduler: which shard runs next, chosen across active jobs when a worker is free.

A job's shards are not queued at plan time. The plan registers them here; the `inference`
queue holds interchangeable tokens, and a worker that takes one asks `pick()` for the shard
to run at that moment: the highest priority with work first, round-robin among its jobs, an
API key over its quota skipped. So a small job waits about one shard per worker, whatever is
queued ahead of it. Celery still delivers (late acks, redelivery); tokens only say "work
waits", and the queue keeps up to `depth` of them so autoscalers see a backlog.
"""

from __future__ import annotations

import time

import redis as redis_lib

from facesense.state import redis_keys

PRIORITIES = ("high", "normal", "low")  # the order rings are served in

# Shared Lua: finished-job test, quota checks and per-job keys built from the prefixes.
_COMMON = """
local JOB, OWNER, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local FINAL = {['"succeeded"'] = true, ['"failed"'] = true, ['"cancelled"'] = true}
local function sched_key(id) return JOB .. id .. ':sched' end
local function retry_key(id) return JOB .. id .. ':sched:retry' end
local function gone(id)
  local status = redis.call('HGET', JOB .. id, 'status')
  return (not status) or FINAL[status] or redis.call('EXISTS', sched_key(id)) == 0
end
local function running_key(owner)  -- the owner's started jobs, finished ones dropped
  local key = OWNER .. owner .. ':running'
  for _, id in ipairs(redis.call('SMEMBERS', key)) do
    if gone(id) then redis.call('SREM', key, id) end
  end
  return key
end
local function flight_key(owner)  -- the owner's shards in flight, lapsed ones dropped
  local key = OWNER .. owner .. ':inflight'
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return key
end
-- Why a quota holds the job back ('jobs' or 'shards'), or false.
local function held(id, s)
  local max_jobs, max_shards = tonumber(s.max_jobs or '0'), tonumber(s.max_shards or '0')
  if max_jobs > 0 then
    local key = running_key(s.owner)
    if redis.call('SISMEMBER', key, id) == 0 and redis.call('SCARD', key) >= max_jobs then
      return 'jobs'
    end
  end
  if max_shards > 0 and redis.call('ZCARD', flight_key(s.owner)) >= max_shards then
    return 'shards'
  end
  return false
end
local function state(id)
  local raw = redis.call('HGETALL', sched_key(id))
  local s = {}
  for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end
  s.next, s.planned = tonumber(s.next or '0'), tonumber(s.planned or '0')
  s.waiting = s.planned - s.next + redis.call('LLEN', retry_key(id))
  return s
end
"""

# Pick the next shard: rings in priority order, each rotated one job per look (round-robin).
# KEYS: the rings. ARGV: job prefix, owner prefix, now, seconds an in-flight note lasts.
_PICK = _COMMON + """
local ttl = tonumber(ARGV[4])
for _, ring in ipairs(KEYS) do
  for _ = 1, redis.call('LLEN', ring) do
    local id = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    if gone(id) then
      redis.call('LREM', ring, 0, id)
    else
      local s = state(id)
      if s.waiting <= 0 then
        if s.listed == '1' then redis.call('LREM', ring, 0, id) end  -- all released
      else
        local why = held(id, s)
        if why then
          redis.call('HSET', sched_key(id), 'held', why)
        else
          local index = redis.call('LPOP', retry_key(id))
          if not index then
            index = tostring(s.next)
            redis.call('HSET', sched_key(id), 'next', s.next + 1)
          end
          redis.call('HDEL', sched_key(id), 'held')
          redis.call('SADD', OWNER .. s.owner .. ':running', id)
          redis.call('ZADD', OWNER .. s.owner .. ':inflight', now + ttl, id .. ':' .. index)
          for _, key in ipairs({OWNER .. s.owner .. ':running', OWNER .. s.owner .. ':inflight'}) do
            redis.call('EXPIRE', key, 86400)
          end
          return {id, index}
        end
      end
    end
  end
end
return false
"""

# Tokens to add so the queue holds min(depth, shards that could start now).
# KEYS: the rings, then the queue. ARGV: job prefix, owner prefix, now, depth.
_TOKENS = _COMMON + """
local queue = table.remove(KEYS)
local need = tonumber(ARGV[4]) - redis.call('LLEN', queue)
local found = 0
for _, ring in ipairs(KEYS) do
  for _, id in ipairs(redis.call('LRANGE', ring, 0, -1)) do
    if found >= need then return need end
    if not gone(id) then
      local s = state(id)
      if s.waiting > 0 and not held(id, s) then found = found + s.waiting end
    end
  end
end
return math.max(0, math.min(found, need))
"""

# Put a job in its ring unless it is there: at the head, so a newcomer has the next turn.
# KEYS: the ring.
_ENSURE_RING = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then redis.call('LPUSH', KEYS[1], ARGV[1]) end
"""


class Scheduler:
    """Register jobs' shards, pick the next shard fairly, and count tokens to send."""

    def __init__(self, redis: redis_lib.Redis, ttl_s: int = 30 * 86400,
                 in_flight_s: int = 240, depth: int = 64):
        self.redis, self.ttl_s, self.in_flight_s, self.depth = redis, ttl_s, in_flight_s, depth
        self._pick = redis.register_script(_PICK)
        self._tokens = redis.register_script(_TOKENS)
        self._ensure = redis.register_script(_ENSURE_RING)

    def _args(self) -> list:
        return [redis_keys.job(""), redis_keys.OWNER_PREFIX, time.time()]

    def register(self, job_id: str, owner: str | None, priority: str = "normal",
                 max_jobs: int = 0, max_shards: int = 0) -> None:
        """Note a job about to list its shards (idempotent: a re-run plan keeps its cursor)."""
        key = redis_keys.sched(job_id)
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, "next", 0)
        pipe.hset(key, mapping={"owner": owner or "-", "priority": _ring_of(priority),
                                "max_jobs": max_jobs, "max_shards": max_shards})
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    def add(self, job_id: str, planned: int, listed: bool = False) -> None:
        """The first `planned` shards may run (never lowered); listed: no more will come."""
        key = redis_keys.sched(job_id)
        known = int(self.redis.hget(key, "planned") or 0)
        fields = {"planned": max(known, planned), **({"listed": 1} if listed else {})}
        self.redis.hset(key, mapping=fields)
        self._ensure(keys=[self._ring(job_id)], args=[job_id])

    def retry(self, job_id: str, indexes: list[int]) -> None:
        """Release these shards again, ahead of new ones (their worker vanished)."""
        if indexes:
            self.redis.pipeline().rpush(redis_keys.sched_retry(job_id), *indexes) \
                .expire(redis_keys.sched_retry(job_id), self.ttl_s).execute()
            self._ensure(keys=[self._ring(job_id)], args=[job_id])

    def pick(self) -> tuple[str, int] | None:
        """The shard to run now, noted in flight for its key's quota; None if none may start."""
        found = self._pick(keys=list(redis_keys.SCHED_RINGS),
                           args=[*self._args(), self.in_flight_s])
        return (found[0].decode(), int(found[1])) if found else None

    def done(self, job_id: str, index: int) -> None:
        """A picked shard ended (counted, failed or handed to a retry): it leaves the quota."""
        owner = self.redis.hget(redis_keys.sched(job_id), "owner")
        if owner:
            self.redis.zrem(redis_keys.owner_in_flight(owner.decode()), f"{job_id}:{index}")

    def tokens_wanted(self, queue: str) -> int:
        """Tokens to send so the queue holds min(depth, shards that could start now)."""
        return int(self._tokens(keys=[*redis_keys.SCHED_RINGS, queue],
                                args=[*self._args(), self.depth]))

    def released(self, job_id: str) -> int:
        """Shards released so far (indexes below this have been handed to a worker)."""
        return int(self.redis.hget(redis_keys.sched(job_id), "next") or 0)

    def standing(self, job_id: str) -> dict | None:
        """Where a job stands: its shards waiting, the jobs and shards that start before its
        next one (higher priorities first, then one shard per job ahead in its ring), and the
        quota holding it back, if one does; None once the scheduler forgot it."""
        s = {k.decode(): v.decode() for k, v in self.redis.hgetall(redis_keys.sched(job_id)).items()}
        if not s:
            return None
        ring = PRIORITIES.index(_ring_of(s.get("priority")))
        ahead = [i.decode() for r in redis_keys.SCHED_RINGS[:ring] for i in self.redis.lrange(r, 0, -1)]
        position = self.redis.lpos(redis_keys.SCHED_RINGS[ring], job_id)
        waiting = self._waiting([*ahead, job_id])
        mine = waiting.pop()
        return {"priority": PRIORITIES[ring], "shards_waiting": mine,
                "jobs_ahead": len(ahead) + (position or 0),
                "shards_ahead": sum(waiting) + (position or 0), "held": s.get("held")}

    def waiting(self) -> int:
        """Shards registered and not yet released, over all jobs (what autoscaling follows)."""
        ids = [i.decode() for r in redis_keys.SCHED_RINGS for i in self.redis.lrange(r, 0, -1)]
        return sum(self._waiting(ids))

    def _waiting(self, ids: list[str]) -> list[int]:
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(redis_keys.sched(job_id), "next", "planned")
                pipe.llen(redis_keys.sched_retry(job_id))
            raw = pipe.execute()
        return [max(0, int(p or 0) - int(n or 0)) + retry
                for (n, p), retry in zip(raw[::2], raw[1::2], strict=True)]

    def forget(self, job_id: str) -> None:
        """Drop a finished job's scheduling state."""
        ring = self._ring(job_id)
        self.redis.pipeline().lrem(ring, 0, job_id).delete(
            redis_keys.sched(job_id), redis_keys.sched_retry(job_id)).execute()

    def _ring(self, job_id: str) -> str:
        priority = self.redis.hget(redis_keys.sched(job_id), "priority")
        return redis_keys.SCHED_RINGS[PRIORITIES.index(priority.decode() if priority else "normal")]


def _ring_of(priority: str | None) -> str:
    """A known priority (unknown or missing ones run as normal)."""
    return priority if priority in PRIORITIES else "normal"
