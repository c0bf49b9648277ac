"""The scheduler's Lua scripts, and the arguments every one of them starts with.

No script spells a key: each is given the key names as templates built by `redis_keys` (a
'%s' where the job id, owner or shard index goes) and the finished statuses from
`state.status`, so the names Redis holds have one source.
"""

from __future__ import annotations

import json

from facesense.state import leases, redis_keys
from facesense.state.status import FINISHED

HOLE = "%s"  # where Lua's string.format puts a job id, an owner or a shard index


def common_args(in_flight_s: int) -> list:
    """ARGV[1..COMMON] of every script: key templates, finished statuses, in-flight seconds."""
    return [redis_keys.job(HOLE), redis_keys.sched(HOLE), redis_keys.sched_retry(HOLE),
            redis_keys.sched_picked(HOLE), redis_keys.owner_running(HOLE),
            redis_keys.owner_in_flight(HOLE), redis_keys.lease(HOLE, leases.shard(HOLE)),
            json.dumps(FINISHED), in_flight_s]


COMMON = len(common_args(0))

# Shared Lua: finished-job test, quota checks and the keys named from their templates.
_COMMON = f"""
local A = {COMMON}  -- ARGV[1..A]: scheduler_lua.common_args; a script's own come after
local JOB, SCHED, RETRY, PICKED, RUNNING, INFLIGHT, SHARD_LEASE =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local TTL = tonumber(ARGV[9])  -- seconds an in-flight note lasts without a live shard lease
local FINAL = {{}}
for _, s in ipairs(cjson.decode(ARGV[8])) do FINAL[cjson.encode(s)] = true end
local clock = redis.call('TIME')  -- the server's clock: workers' clocks may disagree
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local function sched_key(id) return string.format(SCHED, id) end
local function retry_key(id) return string.format(RETRY, id) end
local function picked_key(id) return string.format(PICKED, id) end
local function gone(id)
  local status = redis.call('HGET', string.format(JOB, id), 'status')
  return (not status) or FINAL[status] or redis.call('EXISTS', sched_key(id)) == 0
end
local function running_key(owner)  -- the owner's started jobs, finished ones dropped
  local key = string.format(RUNNING, owner)
  for _, id in ipairs(redis.call('SMEMBERS', key)) do
    if gone(id) then redis.call('SREM', key, id) end
  end
  return key
end
-- The owner's shards in flight, lapsed notes dropped: a note lapses TTL after its pick unless
-- its shard's lease is still held, so a shard that runs longer keeps counting for its key.
local function flight_key(owner)
  local key = string.format(INFLIGHT, owner)
  for _, note in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now)) do
    local id, index = string.match(note, '^(.+):(%d+)$')
    if id and redis.call('EXISTS', string.format(SHARD_LEASE, id, index)) == 1 then
      redis.call('ZADD', key, now + TTL, note)
    else
      redis.call('ZREM', key, note)
    end
  end
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
  local s = {{}}
  for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end
  s.next, s.planned = tonumber(s.next or '0'), tonumber(s.planned or '0')
  s.waiting = s.planned - s.next + redis.call('LLEN', retry_key(id))
  return s
end
"""

# Pick the next shard: rings in priority order, each rotated one job per look (round-robin).
# KEYS: the rings.
PICK = _COMMON + """
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
            local running = string.format(RUNNING, s.owner)
            redis.call('SADD', running, id)
            redis.call('EXPIRE', running, 86400)
          end
          if tonumber(s.max_shards or '0') > 0 then
            local inflight = string.format(INFLIGHT, s.owner)
            redis.call('ZADD', inflight, now + TTL, id .. ':' .. index)
            redis.call('EXPIRE', inflight, 86400)
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
# KEYS: the rings, then the queue. ARGV after the common ones: depth.
TOKENS = _COMMON + """
local queue = table.remove(KEYS)
local need = tonumber(ARGV[A + 1]) - redis.call('LLEN', queue)
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

# Why a quota holds the job back now ('jobs' or 'shards'), or false. ARGV after the common
# ones: the job id.
HELD = _COMMON + """
local id = ARGV[A + 1]
if gone(id) then return false end
return held(id, state(id))
"""

# A training job takes one of its key's running-job slots (it keeps the slot until it ends:
# its scheduling state has no shards, so gone() holds it while the job runs); 0 when the
# key's quota is full. ARGV after the common ones: job id, owner, quota, ttl.
CLAIM = _COMMON + """
local id, owner, max_jobs = ARGV[A + 1], ARGV[A + 2], tonumber(ARGV[A + 3])
redis.call('HSET', sched_key(id), 'owner', owner, 'max_jobs', max_jobs, 'training', 1)
redis.call('HSETNX', sched_key(id), 'next', 0)
redis.call('EXPIRE', sched_key(id), tonumber(ARGV[A + 4]))
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
ENSURE_RING = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then redis.call('LPUSH', KEYS[1], ARGV[1]) end
"""
