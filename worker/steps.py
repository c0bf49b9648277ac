"""How every task runs its step: log context, transient retries, and clear failures."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from celery import Task
from celery.signals import task_postrun, task_prerun

from facesense.errors import FacesenseError, TransientError
from facesense.logs import bind_job, unbind_job
from facesense.settings import Settings
from facesense.state.leases import LeaseBusy
from worker.context import Context
from worker.jobs import fail_job, hold_for_retry

log = logging.getLogger(__name__)
TRANSIENT = (TransientError, redis.ConnectionError, redis.TimeoutError)  # worth a retry


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
