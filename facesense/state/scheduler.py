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

from facesense.state import redis_keys, scheduler_lua
from facesense.state.status import FINISHED

PRIORITIES = ("high", "normal", "low")  # the order rings are served in


class Scheduler:
    """Register jobs' shards, pick the next shard fairly, and count tokens to send."""

    # in_flight_s: how long a picked shard counts against its key's shard quota before its
    # lease is checked (then it counts on while the lease is held: a long shard stays counted)
    def __init__(self, redis: redis_lib.Redis, ttl_s: int = 30 * 86400,
                 in_flight_s: int = 240, depth: int = 64):
        self.redis, self.ttl_s, self.in_flight_s, self.depth = redis, ttl_s, in_flight_s, depth
        self._pick = redis.register_script(scheduler_lua.PICK)
        self._tokens = redis.register_script(scheduler_lua.TOKENS)
        self._ensure = redis.register_script(scheduler_lua.ENSURE_RING)
        self._held = redis.register_script(scheduler_lua.HELD)
        self._claim = redis.register_script(scheduler_lua.CLAIM)
        self._common = scheduler_lua.common_args(in_flight_s)

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
        return bool(self._claim(keys=[], args=[*self._common, job_id, owner or "-", max_jobs,
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
                           args=self._common)
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
                                       args=[*self._common, self.depth])))

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
        held = self._held(keys=[], args=[*self._common, job_id])  # now, not as last seen
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
        return [0 if status is None or json.loads(status) in FINISHED
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
