"""The watchdog: one control worker checks now and then that no active job lost its worker."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time

from facesense.errors import JobNotFound
from facesense.queue import CONTROL_QUEUE, INFERENCE_QUEUE, TRAINING_QUEUE
from facesense.state import leases, redis_keys
from facesense.state.purge import Purger
from facesense.state.status import JobStatus
from worker import steps
from worker.context import Context
from worker.runner import lifecycle

log = logging.getLogger(__name__)
RETAIN_EVERY_S = 60.0  # the retention rule lists the store's jobs/: not at every sweep


class Watchdog:
    """Requeues the work of active jobs whose worker vanished (a shard back through the
    scheduler, ahead of new ones and under its key's quotas; any other step as its task).

    Work in progress holds a lease renewed by a heartbeat: work that was started (it counted a
    delivery) but whose lease lapsed lost its worker. A job that holds no lease and has not
    moved for stall_s while its queue is empty (nothing is waiting that could be its work) may
    have lost a message (a worker died holding it, or Redis restarted under it): its pending
    work is queued again. Requeueing is at-least-once and every step is idempotent, so a stray
    duplicate costs time, never a row; a marker that lasts as long as the broker's visibility
    timeout keeps many workers (and many sweeps) from queueing the same work twice.
    """

    def __init__(self, ctx: Context, stall_s: float | None = None, pick_grace_s: float | None = None):
        self.ctx, self.jobs, self.leases = ctx, ctx.jobs, ctx.leases
        self.stall_s = stall_s if stall_s is not None else 10 * ctx.settings.lease_ttl_s
        # a shard picked this long ago with no lease and no delivery lost its worker before
        # it could take the lease (killed between the pick and the lease)
        self.pick_grace_s = ctx.settings.lease_ttl_s if pick_grace_s is None else pick_grace_s
        self._seen: dict[str, tuple[tuple, float]] = {}  # job id -> (its state, since when)
        self._idle: dict[str, bool] = {}  # queue -> empty at this sweep
        self.retained_at = -math.inf  # when the retention rule last ran (time.monotonic)

    def sweep(self) -> list[tuple[str, str]]:
        """One pass over the active jobs; returns the (job id, lease name) requeued."""
        requeued, active = [], self.jobs.active()
        self._idle = {q: self.jobs.redis.llen(q) == 0
                      for q in (INFERENCE_QUEUE, TRAINING_QUEUE, CONTROL_QUEUE)}
        for job_id in active:
            try:
                record = self.jobs.get(job_id)
            except JobNotFound:
                record = {"status": "gone"}
            if record["status"] not in (JobStatus.QUEUED, JobStatus.RUNNING):
                self.jobs.forget_active(job_id)
                continue
            for step, args in self._lost_work(record):
                name = step.lease(*args)
                if self.leases.mark_requeued(job_id, name, self.ctx.settings.visibility_timeout):
                    log.warning("job %s: requeued %s (its worker vanished)", job_id,
                                leases.describe(name))
                    self._requeue(step, job_id, args)
                    requeued.append((job_id, name))
        self._seen = {k: v for k, v in self._seen.items() if k in active}
        # tokens lost with a worker or a Redis restart, and for the shards requeued, go out
        lifecycle(self.ctx).after_step()
        return requeued

    def _requeue(self, step: steps.Step, job_id: str, args: list) -> None:
        """A shard goes back to the scheduler (ahead of new ones, under its key's quotas; its
        in-flight slot freed); any other step is queued as its task again."""
        if step.shard:
            self.ctx.sched.done(job_id, args[0])
            self.ctx.sched.retry(job_id, args)
        else:
            self.ctx.enqueue(step.task, [job_id, *args])

    def _stalled(self, record: dict) -> bool:
        """True once the job has not moved for stall_s while its queue stood empty."""
        queues = (TRAINING_QUEUE,) if record["type"] == "train" else (INFERENCE_QUEUE,
                                                                       CONTROL_QUEUE)
        state = (record["status"], record.get("shards"), record.get("shards_done"))
        seen = self._seen.get(record["id"])
        if seen is None or seen[0] != state or not all(self._idle[q] for q in queues):
            self._seen[record["id"]] = (state, time.monotonic())  # a backlog is not a stall
            return False
        return time.monotonic() - seen[1] > self.stall_s

    def _lost_work(self, record: dict):
        """(step row, args after the job id) of each piece of the job that lost its worker."""
        job_id, kind, stalled = record["id"], record["type"], self._stalled(record)
        if kind == "train":
            train = steps.of(kind, "train")
            if (record["status"] == JobStatus.RUNNING or stalled) and not self._held(train, job_id):
                yield train, []
            return
        shards = record.get("shards") or 0
        if not shards:  # queued, or planning
            plan = steps.of(kind, "plan")
            started = record["status"] == JobStatus.RUNNING or "planned" in record  # listing began
            if (started or stalled) and not self._held(plan, job_id):
                yield plan, []
            # shards already queued by a plan still listing: a started one that lost its worker
            yield from self._lost_shards(record, record.get("planned") or 0, stalled=False)
        elif record["shards_done"] >= shards:  # queued by the last shard: lost only if stalled
            final = steps.of(kind, "finalize")
            if stalled and not self._held(final, job_id):
                yield final, []
        else:
            yield from self._lost_shards(record, shards, stalled)

    def _held(self, step: steps.Step, job_id: str, *args) -> bool:
        return self.leases.alive(job_id, step.lease(*args))

    def _lost_shards(self, record: dict, shards: int, stalled: bool):
        """Uncounted shards among the first `shards` that were started (or, in a stalled job,
        released by the scheduler) and hold no lease: each goes back to the scheduler."""
        if not shards:
            return
        job_id, shard = record["id"], steps.shard_of(record["type"])
        attempts = self.ctx.shards.attempts(job_id)
        released = self.ctx.sched.released(job_id) if stalled else 0
        picked = self.ctx.sched.picked_before(job_id, self.pick_grace_s)
        for index in self.ctx.shards.uncounted(job_id, shards):
            started = attempts.get(index, 0) > 0 or index in picked or index < released
            if started and not self._held(shard, job_id, index):
                yield shard, [index]


def interval(ctx: Context) -> float:
    """Seconds between sweeps: half a lease, so lost work is found within about one lease."""
    return max(1.0, ctx.settings.lease_ttl_s / 2)


def tick(dog: Watchdog, owner: str) -> bool:
    """Sweep if this worker is the cluster's sweeper (elected by a lease it renews each tick,
    so one worker sweeps while it lives and its stall timers keep running); True if it swept.

    The lease lasts three intervals: a sweeper that died is replaced within that time.
    """
    ttl = max(2, round(3 * interval(dog.ctx)))
    if not dog.leases.elect(redis_keys.SWEEPER, owner, ttl):
        return False
    dog.sweep()
    retain(dog)
    return True


def retain(dog: Watchdog, every_s: float = RETAIN_EVERY_S) -> list[str]:
    """Delete finished jobs older than FACESENSE_JOB_RETENTION_DAYS, a bounded number a run
    (at most once every every_s: it lists the store); returns the ids deleted."""
    s = dog.ctx.settings
    if s.job_retention_days <= 0 or time.monotonic() - dog.retained_at < every_s:
        return []
    dog.retained_at = time.monotonic()
    deleted = Purger(dog.jobs).sweep(s.job_retention_days, s.job_retention_batch)
    if deleted:
        log.info("retention: deleted %d job(s) older than %d days", len(deleted),
                 s.job_retention_days)
    return deleted


def start(ctx: Context) -> threading.Thread:
    """Run the watchdog in a daemon thread for as long as the worker lives; one worker in the
    cluster sweeps each interval, so the cost does not grow with the number of workers."""
    dog = Watchdog(ctx)
    owner = f"{socket.gethostname()}:{os.getpid()}"

    def loop():
        while True:
            try:
                tick(dog, owner)
            except Exception as e:  # Redis or the broker away for a moment: try next time
                log.warning("watchdog sweep failed: %s", e)
            time.sleep(interval(ctx))

    thread = threading.Thread(target=loop, daemon=True, name="watchdog")
    thread.start()
    return thread
