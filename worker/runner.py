"""The one step runner: every job step (a row of worker.steps) runs through it.

It alone takes the step's lease, decides what a busy lease means (the row says), retries with
jittered backoff (transient errors, a quota that holds the step, a step that asks), fails the
job on anything else, and after every step calls the one `Lifecycle.after_step`, which sends
shard tokens and queues the finaliser when due. A step is a plain function
`step(ctx, job_id, *args)` that never names its lease, sends tokens or queues a finaliser.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable

import redis
from celery import Celery, Task
from celery.signals import task_postrun, task_prerun

from facesense.errors import FacesenseError, TransientError, backoff
from facesense.logs import bind_job, unbind_job
from facesense.queue import lifecycle as lifecycle_of
from facesense.state.leases import Lease, LeaseBusy, LeaseLost
from facesense.state.lifecycle import Lifecycle
from worker import steps
from worker.context import Context
from worker.steps import Busy, Step

log = logging.getLogger(__name__)
TRANSIENT = (TransientError, redis.ConnectionError, redis.TimeoutError)  # worth a retry
HELD_RETRY_S = 5  # how soon a step held by its key's quota looks again
RETRY_BASE_S, RETRY_CAP_S = 1, 60  # a transient error's retries: 1 s, 2 s, 4 s ... 60 s
JITTER = 0.25  # a retry waits up to this share longer, so retries after one outage spread out
_SKIPPED = object()  # the step did not run: its lease was busy (a SKIP row) or lost


class Held(Exception):
    """The step may not start yet (its key's quota is full): run it again shortly."""


class RetryIn(Exception):
    """The step asks to run again after `seconds` (not a failure: a webhook's next attempt)."""

    def __init__(self, seconds: float):
        super().__init__(f"retry in {seconds} s")
        self.seconds = seconds


def lifecycle(ctx: Context) -> Lifecycle:
    """The context's services as the lifecycle uses them (read now: tests swap enqueue)."""
    return lifecycle_of(ctx.jobs, ctx.sched, ctx.enqueue)


def jitter(seconds: float) -> float:
    """seconds, stretched by up to JITTER at random (never shortened)."""
    return seconds * (1 + random.uniform(0, JITTER))


def hold_for_retry(ctx: Context, job_id: str, lease: str, countdown: float) -> None:
    """A step about to wait out a retry countdown holds no lease: mark its work as requeued
    for that long (and one lease more), so the watchdog does not queue a second copy."""
    try:
        ctx.leases.mark_requeued(job_id, lease, int(countdown) + ctx.settings.lease_ttl_s)
    except Exception as e:  # Redis away: the retry still happens; a duplicate costs only time
        log.warning("job %s: could not mark %s as waiting to retry: %s", job_id, lease, e)


def perform(ctx: Context, step: Step, job_id: str, *args, attempt: int = 1):
    """Run one step under its lease, then after_step; the step's result (None if skipped).

    A busy lease skips a SKIP row and raises LeaseBusy for a RETRY row; a lost lease stops
    the step, touching nothing more. Other errors propagate to the caller (run_task).
    """
    ran, streamed, result = False, False, None
    try:
        outcome = _leased(ctx, step, job_id, args, attempt)
        ran = outcome is not _SKIPPED
        result, streamed = outcome if ran else (None, False)
        return result
    finally:
        if step.shard:  # picked by the scheduler: it leaves its key's in-flight quota
            try:
                ctx.sched.done(job_id, args[0])
            except Exception as e:  # Redis away: the in-flight note lapses by itself
                log.warning("job %s: shard %s: could not tell the scheduler it ended: %s",
                            job_id, args[0], e)
        # a streamed step's parts got their tokens as they were yielded
        counted = ran and step.counts is not None and step.counts(result)
        lifecycle(ctx).after_step(job_id, counted=counted, refill=not streamed)


def _leased(ctx: Context, step: Step, job_id: str, args: tuple, attempt: int):
    """The step's function called under the row's lease (if it has one): as _call, or
    _SKIPPED."""
    extra = {"attempt": attempt} if "attempt" in step.passes else {}
    if step.lease is None:
        return _call(ctx, step, job_id, args, extra)
    try:
        with Lease(ctx.leases, job_id, ctx.settings.lease_ttl_s, step.lease(*args)) as lease:
            if "lease" in step.passes:
                extra["lease"] = lease
            return _call(ctx, step, job_id, args, extra)
    except LeaseBusy:
        if step.busy is Busy.SKIP:  # a live worker does it; the watchdog acts if that one dies
            return _SKIPPED
        raise
    except LeaseLost:
        log.warning("job %s: %s: lease lost; leaving the work to the worker that holds it",
                    job_id, step.name)
        return _SKIPPED


def _call(ctx: Context, step: Step, job_id: str, args: tuple, extra: dict) -> tuple:
    """Call the step's function: (its result, whether it streamed). A step that yields (a plan
    releasing its shards batch by batch) gets the after_step refill at each yield, so its
    shards start while it goes on."""
    result = step.function()(ctx, job_id, *args, **extra)
    if not inspect.isgenerator(result):
        return result, False
    streamed = False
    while True:
        try:
            next(result)
        except StopIteration as done:
            return done.value, streamed
        lifecycle(ctx).after_step()
        streamed = True


def take_turn(ctx: Context) -> tuple[str, int] | None:
    """A token's turn: the shard the scheduler picks now, or None when none may start
    (another token got it, or a quota holds the rest back)."""
    picked = ctx.sched.pick()
    if picked is not None:  # this token is spent: keep the queue at its depth while work waits
        lifecycle(ctx).after_step()
    return picked


def run_task(task: Task, ctx: Context, step: Step, job_id: str | None, *args):
    """Run a step for a Celery task: a token first takes its turn; a retry is raised with the
    same arguments (a token's retry names the shard it picked); a failure fails the job."""
    if job_id is None:  # a token: the scheduler picks the shard now
        try:
            picked = take_turn(ctx)
        except TRANSIENT as e:  # Redis away: keep the token, try again shortly
            raise task.retry(countdown=jitter(_transient_wait(task)), exc=e) from None
        if picked is None:
            return None
        job_id, args = picked[0], picked[1:]
        bind_job(job_id, task.name)
    if step.shard:  # whichever kind of shard the job has
        step = steps.shard_of(ctx.jobs.get_field(job_id, "type"))
    wait, error = None, None
    try:
        result = perform(ctx, step, job_id, *args, attempt=task.request.retries + 1)
    except LeaseBusy:  # a live worker holds it: look again once its lease could have lapsed
        wait = ctx.settings.lease_ttl_s
    except Held:  # not a failure: never counted against task_max_retries
        wait = HELD_RETRY_S
    except RetryIn as e:
        wait = e.seconds
    except TRANSIENT as e:
        if task.request.retries >= ctx.settings.task_max_retries:
            lifecycle(ctx).fail(job_id, f"gave up after {task.request.retries} retries: {e}")
        else:
            wait, error = _transient_wait(task), e
            log.warning("job %s: %s; retry in %ss", job_id, e, wait)
    except FacesenseError as e:
        lifecycle(ctx).fail(job_id, str(e))
    except Exception as e:
        log.exception("job %s: unexpected error", job_id)
        lifecycle(ctx).fail(job_id, f"internal error: {type(e).__name__}: {e}")
    else:
        _cleanup(ctx, step, job_id)
        return result
    if wait is None:
        _cleanup(ctx, step, job_id)
        return None
    wait = jitter(wait)
    if step.lease is not None:
        hold_for_retry(ctx, job_id, step.lease(*args), wait)
    raise task.retry(args=[job_id, *args], countdown=wait, exc=error, max_retries=None)


def _transient_wait(task: Task) -> float:
    return backoff(task.request.retries + 1, RETRY_BASE_S, RETRY_CAP_S)


def _cleanup(ctx: Context, step: Step, job_id: str) -> None:
    """The row's cleanup, once its step is over for good (never before a retry)."""
    if step.cleanup is None:
        return
    try:
        step.resolve(step.cleanup)(ctx, job_id)
    except Exception as e:  # the job's end stands; what is left is only disk
        log.warning("job %s: %s: cleanup failed: %s", job_id, step.name, e)


def register(app: Celery, context: Callable[[], Context], queues: tuple[str, ...]) -> None:
    """Register a Celery task for each row of the table served on these queues."""
    for step in steps.STEPS:
        if step.queue in queues:
            app.task(name=step.task, bind=True, max_retries=None)(_shell(step, context))


def _shell(step: Step, context: Callable[[], Context]):
    def shell(self, job_id: str | None = None, *args):
        return run_task(self, context(), step, job_id, *args)

    shell.__name__ = shell.__qualname__ = step.name
    shell.__doc__ = step.doc
    return shell


@task_prerun.connect
def bind_log_context(task=None, args=None, **_):
    """Every line logged while a task runs carries its job id (tasks take it first)."""
    job_id = args[0] if args and isinstance(args[0], str) else None
    bind_job(job_id, task.name)


@task_postrun.connect
def unbind_log_context(**_):
    """The task is over: later lines belong to no job."""
    unbind_job()
