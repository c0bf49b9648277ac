"""What every task shares in the worker: how a step runs (log context, retries, clear failures),
waiting to retry, ending a job that cannot go on, and sending shard tokens."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from celery import Task
from celery.signals import task_postrun, task_prerun

from facesense.errors import FacesenseError, TransientError
from facesense.logs import bind_job, unbind_job
from facesense.queue import CLASSIFY_SHARD, INFERENCE_QUEUE
from facesense.settings import Settings
from facesense.state.leases import LeaseBusy
from facesense.state.status import JobStatus
from worker.context import Context

log = logging.getLogger(__name__)
TRANSIENT = (TransientError, redis.ConnectionError, redis.TimeoutError)  # worth a retry
HELD_RETRY_S = 5  # how soon a step held by its key's quota looks again


class Held(Exception):
    """The step may not start yet (its key's quota is full): run it again shortly."""


def hold_for_retry(ctx: Context, job_id: str, lease: str, countdown: float) -> None:
    """A step about to wait out a retry countdown holds no lease: mark its work as requeued
    for that long (and one lease more), so the watchdog does not queue a second copy."""
    try:
        ctx.leases.mark_requeued(job_id, lease, int(countdown) + ctx.settings.lease_ttl_s)
    except Exception as e:  # Redis away: the retry still happens; a duplicate costs only time
        log.warning("job %s: could not mark %s as waiting to retry: %s", job_id, lease, e)


def fail_job(ctx: Context, job_id: str, reason: str) -> None:
    """Mark a job (of any type) failed with a reason, unless it already finished, and archive it."""
    log.warning("job %s failed: %s", job_id, reason)
    if ctx.jobs.exists(job_id) and ctx.jobs.set_status(job_id, JobStatus.FAILED, error=reason):
        try:  # its shards leave the rings (and the backlog autoscalers read) now
            ctx.sched.forget(job_id)
        except Exception as e:
            log.warning("job %s: could not drop its scheduling state: %s", job_id, e)
        try:
            ctx.jobs.archive(job_id)
        except FacesenseError as e:  # the store may be what failed: Redis keeps the record
            log.warning("job %s: could not archive its record: %s", job_id, e)


def top_up(ctx: Context) -> int:
    """Send the shard tokens the scheduler asks for (queue up to its depth); returns how many.

    Called wherever shards may start: a plan batch, a shard picked or ended, each sweep.
    """
    wanted = ctx.sched.tokens_wanted(INFERENCE_QUEUE)
    for _ in range(wanted):
        ctx.enqueue(CLASSIFY_SHARD, [])
    return wanted


@task_prerun.connect
def bind_log_context(task=None, args=None, **_):
    """Every line logged while a task runs carries its job id (tasks take it first)."""
    job_id = args[0] if args and isinstance(args[0], str) else None
    bind_job(job_id, task.name)


@task_postrun.connect
def unbind_log_context(**_):
    """The task is over: later lines belong to no job."""
    unbind_job()


def run_job_step(task: Task, context: Callable[[], Context], settings: Settings, job_id: str,
                 lease: str, step, *args):
    """Run one step; transient errors retry with backoff, anything else fails the job clearly.

    A retry carries the same arguments (a token's retry names the shard it picked). lease
    names the step's lease: while the step waits out a retry countdown it holds none, so it
    is marked as requeued for that long, and the watchdog does not queue a second copy.
    """
    again = [job_id, *args]
    try:
        return step(context(), job_id, *args)
    except LeaseBusy:
        # A live worker holds the job: check again once its lease could have lapsed.
        hold_for_retry(context(), job_id, lease, settings.lease_ttl_s)
        raise task.retry(args=again, countdown=settings.lease_ttl_s) from None
    except Held:  # not a failure: never counted against task_max_retries
        hold_for_retry(context(), job_id, lease, HELD_RETRY_S)
        raise task.retry(args=again, countdown=HELD_RETRY_S, max_retries=None) from None
    except TRANSIENT as e:
        if task.request.retries < settings.task_max_retries:
            delay = min(60, 2 ** task.request.retries)
            log.warning("job %s: %s; retry in %ss", job_id, e, delay)
            hold_for_retry(context(), job_id, lease, delay)
            raise task.retry(args=again, exc=e, countdown=delay, max_retries=None) from None
        fail_job(context(), job_id, f"gave up after {task.request.retries} retries: {e}")
    except FacesenseError as e:
        fail_job(context(), job_id, str(e))
    except Exception as e:
        log.exception("job %s: unexpected error", job_id)
        fail_job(context(), job_id, f"internal error: {type(e).__name__}: {e}")
    return None
