"""The fair scheduler: which shard runs next, chosen across active jobs when a worker is free.

A job's shards are not queued at plan time. The plan registers them here; the `inference`
queue holds interchangeable tokens, and a worker that takes one asks `pick()` for the shard
to run at that moment: the highest priority with work first, round-robin among its jobs, an
API key over its quota skipped. So a small job waits about one shard per worker, whatever is
queued ahead of it. Celery still delivers (late acks, redelivery); tokens only say "work
waits", and the queue keeps up to `depth` of them so autoscalers see a backlog.
"""

from __future__ import annotations

import json

import redis as redis_lib

from facesense.state import redis_keys

PRIORITIES = ("high", "normal", "low")  # the order rings are served in
FINAL = ("succeeded", "failed", "cancelled")

# Shared Lua: finished-job test, quota checks and per-job keys built from the prefixes.
_COMMON = """
local JOB, OWNER = ARGV[1], ARGV[2]
local clock = redis.call('TIME')  -- the server's clock: workers' clocks may disagree
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local FINAL = {['"succeeded"'] = true, ['"failed"'] = true, ['"cancelled"'] = true}
local function sched_key(id) return JOB .. id .. ':sched' end
local function retry_key(id) return JOB .. id .. ':sched:retry' end
local function picked_key(id) return JOB .. id .. ':sched:picked' end
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
# KEYS: the rings. ARGV: job prefix, owner prefix, seconds an in-flight note lasts.
_PICK = _COMMON + """
local ttl = tonumber(ARGV[3])
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
          -- when it was picked: a worker that dies before it leases the shard leaves this
          redis.call('ZADD', picked_key(id), now, index)
          redis.call('EXPIRE', picked_key(id), 86400)
          -- the quota sets are kept only for a key with a quota, so they never grow unused
          if tonumber(s.max_jobs or '0') > 0 then
            redis.call('SADD', OWNER .. s.owner .. ':running', id)
            redis.call('EXPIRE', OWNER .. s.owner .. ':running', 86400)
          end
          if tonumber(s.max_shards or '0') > 0 then
            redis.call('ZADD', OWNER .. s.owner .. ':inflight', now + ttl, id .. ':' .. index)
            redis.call('EXPIRE', OWNER .. s.owner .. ':inflight', 86400)
          end
          return {id, index}
        end
      end
    end
  end
end
return false
"""

# Tokens to add so the queue holds min(depth, shards that could start now): a key's jobs add
# no more than its quotas' headroom, so a quota does not turn into a storm of empty tokens.
# KEYS: the rings, then the queue. ARGV: job prefix, owner prefix, depth.
_TOKENS = _COMMON + """
local queue = table.remove(KEYS)
local need = tonumber(ARGV[3]) - redis.call('LLEN', queue)
if need <= 0 then return 0 end
local found, shards_left, jobs_left = 0, {}, {}
for _, ring in ipairs(KEYS) do
  for _, id in ipairs(redis.call('LRANGE', ring, 0, -1)) do
    if found >= need then return need end
    if not gone(id) then
      local s = state(id)
      if s.waiting > 0 and not held(id, s) then
        local n = s.waiting
        if tonumber(s.max_shards or '0') > 0 then
          shards_left[s.owner] = shards_left[s.owner] or
            (tonumber(s.max_shards) - redis.call('ZCARD', flight_key(s.owner)))
          n = math.min(n, shards_left[s.owner])
          shards_left[s.owner] = shards_left[s.owner] - n
        end
        local key = running_key(s.owner)
        if tonumber(s.max_jobs or '0') > 0 and redis.call('SISMEMBER', key, id) == 0 then
          jobs_left[s.owner] = jobs_left[s.owner] or (tonumber(s.max_jobs) - redis.call('SCARD', key))
          if jobs_left[s.owner] <= 0 then n = 0 end
          jobs_left[s.owner] = jobs_left[s.owner] - 1
        end
        found = found + math.max(0, n)
      end
    end
  end
end
return math.min(found, need)
"""

# Why a quota holds the job back now ('jobs' or 'shards'), or false. ARGV: job id last.
_HELD = _COMMON + """
local id = ARGV[3]
if gone(id) then return false end
return held(id, state(id))
"""

# A training job takes one of its key's running-job slots (it keeps the slot until it ends:
# its scheduling state has no shards, so gone() holds it while the job runs); 0 when the
# key's quota is full. ARGV: job prefix, owner prefix, job id, owner, quota, ttl.
_CLAIM = _COMMON + """
local id, owner, max_jobs = ARGV[3], ARGV[4], tonumber(ARGV[5])
redis.call('HSET', sched_key(id), 'owner', owner, 'max_jobs', max_jobs, 'training', 1)
redis.call('HSETNX', sched_key(id), 'next', 0)
redis.call('EXPIRE', sched_key(id), tonumber(ARGV[6]))
if max_jobs <= 0 then return 1 end
local key = running_key(owner)
if redis.call('SISMEMBER', key, id) == 1 or redis.call('SCARD', key) < max_jobs then
  redis.call('SADD', key, id)
  redis.call('EXPIRE', key, 86400)
  redis.call('HDEL', sched_key(id), 'held')
  return 1
end
redis.call('HSET', sched_key(id), 'held', 'jobs')
return 0
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
        self._held = redis.register_script(_HELD)
        self._claim = redis.register_script(_CLAIM)

    def _args(self) -> list:
        return [redis_keys.job(""), redis_keys.OWNER_PREFIX]

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

    def claim_training(self, job_id: str, owner: str | None, max_jobs: int = 0) -> bool:
        """Count a training job among its key's running jobs; False if the quota is full."""
        return bool(self._claim(keys=[], args=[*self._args(), job_id, owner or "-", max_jobs,
                                               self.ttl_s]))

    def training_on_shared_workers(self, job_id: str, running: bool, lapse_s: int) -> None:
        """Note (or drop) a training job running on a worker that also scores: scoring jobs
        waiting behind it say so. The note lapses unless renewed (a worker that died)."""
        if not running:
            self.redis.zrem(redis_keys.TRAINING_SHARED, job_id)
            return
        now = self.redis.time()
        self.redis.zadd(redis_keys.TRAINING_SHARED, {job_id: now[0] + lapse_s})

    def trainings_on_shared_workers(self) -> int:
        """Training jobs now holding a worker that also serves the inference queue."""
        now = self.redis.time()
        self.redis.zremrangebyscore(redis_keys.TRAINING_SHARED, "-inf", now[0])
        return int(self.redis.zcard(redis_keys.TRAINING_SHARED))

    def pick(self) -> tuple[str, int] | None:
        """The shard to run now, noted in flight for its key's quota; None if none may start."""
        found = self._pick(keys=list(redis_keys.SCHED_RINGS),
                           args=[*self._args(), self.in_flight_s])
        return (found[0].decode(), int(found[1])) if found else None

    def done(self, job_id: str, index: int) -> None:
        """A picked shard ended (counted, failed or handed to a retry): it leaves the quota.
        The owner is read from the job's record, which outlives its scheduling state."""
        owner = self.redis.hget(redis_keys.job(job_id), "owner")
        owner = (json.loads(owner) if owner else None) or "-"
        self.redis.zrem(redis_keys.owner_in_flight(owner), f"{job_id}:{index}")

    def picked_before(self, job_id: str, seconds_ago: float) -> set[int]:
        """Shards picked at least seconds_ago and not yet counted (counting drops the note)."""
        now = self.redis.time()
        cutoff = now[0] + now[1] / 1e6 - seconds_ago
        return {int(i) for i in self.redis.zrangebyscore(redis_keys.sched_picked(job_id),
                                                          "-inf", cutoff)}

    def tokens_wanted(self, queue: str) -> int:
        """Tokens to send so the queue holds min(depth, shards that could start now)."""
        return max(0, int(self._tokens(keys=[*redis_keys.SCHED_RINGS, queue],
                                       args=[*self._args(), self.depth])))

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
        held = self._held(keys=[], args=[*self._args(), job_id])  # now, not as last seen
        return {"priority": PRIORITIES[ring], "shards_waiting": mine,
                "jobs_ahead": sum(1 for n in waiting if n) + (position or 0),
                "shards_ahead": sum(waiting) + (position or 0),
                # Counted whether its shards still wait here or were handed to the broker: a
                # released shard can sit behind a training task on a worker that also scores.
                "training_ahead": self.trainings_on_shared_workers(),
                "held": held.decode() if held else None}

    def waiting(self) -> int:
        """Shards registered and not yet released, over all jobs (what autoscaling follows)."""
        ids = [i.decode() for r in redis_keys.SCHED_RINGS for i in self.redis.lrange(r, 0, -1)]
        return sum(self._waiting(ids))

    def _waiting(self, ids: list[str]) -> list[int]:
        """Each job's shards not yet released (0 for a job that finished)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(redis_keys.sched(job_id), "next", "planned")
                pipe.llen(redis_keys.sched_retry(job_id))
                pipe.hget(redis_keys.job(job_id), "status")
            raw = pipe.execute()
        return [0 if status is None or json.loads(status) in FINAL
                else max(0, int(p or 0) - int(n or 0)) + retry
                for (n, p), retry, status in zip(raw[::3], raw[1::3], raw[2::3], strict=True)]

    def forget(self, job_id: str) -> None:
        """Drop a finished job's scheduling state."""
        ring = self._ring(job_id)
        self.redis.pipeline().lrem(ring, 0, job_id).delete(
            redis_keys.sched(job_id), redis_keys.sched_retry(job_id),
            redis_keys.sched_picked(job_id)).execute()

    def _ring(self, job_id: str) -> str:
        priority = self.redis.hget(redis_keys.sched(job_id), "priority")
        return redis_keys.SCHED_RINGS[PRIORITIES.index(priority.decode() if priority else "normal")]


def _ring_of(priority: str | None) -> str:
    """A known priority (unknown or missing ones run as normal)."""
    return priority if priority in PRIORITIES else "normal"
