"""Celery tasks: thin shells that build the context once and call the plain job functions."""

from __future__ import annotations

import functools
import logging

import redis
from celery import Task
from celery.signals import task_postrun, task_prerun, worker_ready

from facesense.errors import FacesenseError, TransientError
from facesense.logs import bind_job, unbind_job
from facesense.outputs.webhooks import DELIVER, backoff, deliver
from facesense.queue import CLASSIFY_SHARD, FINALIZE_CLASSIFY, PLAN_CLASSIFY, TRAIN
from facesense.state import leases
from facesense.state.leases import LeaseBusy
from worker import classify, metrics, training, watchdog
from worker.celery_app import app, settings
from worker.context import Context, build_context
from worker.jobs import fail_job, hold_for_retry

log = logging.getLogger(__name__)
TRANSIENT = (TransientError, redis.ConnectionError, redis.TimeoutError)  # worth a retry


@functools.cache
def context() -> Context:
    """This process's context, built on first use (after any fork), and its watchdog."""
    ctx = build_context(settings, lambda name, args: app.send_task(name, args=args))
    watchdog.start(ctx)  # every worker watches for active jobs whose worker vanished
    return ctx


@worker_ready.connect
def on_ready(sender=None, **_):
    """A solo worker builds its context (and starts its watchdog) before its first task.

    Prefork pools build theirs in each child instead: a parent's threads must not be forked.
    """
    if type(getattr(sender, "pool", None)).__module__.endswith(".solo"):
        context()
        metrics.serve(settings.worker_metrics_port)  # this process runs the tasks it counts
    elif settings.worker_metrics_port:
        log.warning("FACESENSE_WORKER_METRICS_PORT needs the solo pool (-P solo): not served")


@task_prerun.connect
def bind_log_context(task=None, args=None, **_):
    """Every line logged while a task runs carries its job id (every task takes it first)."""
    job_id = args[0] if args and isinstance(args[0], str) else None
    bind_job(job_id, task.name)


@task_postrun.connect
def unbind_log_context(**_):
    """The task is over: later lines belong to no job."""
    unbind_job()


def run_job_step(task: Task, job_id: str, lease: str, step, *args):
    """Run one step; transient errors retry with backoff, anything else fails the job clearly.

    lease names the step's lease: while the step waits out a retry countdown it holds none, so
    it is marked as requeued for that long, and the watchdog does not queue a second copy.
    """
    try:
        ctx = context()
        return step(ctx, job_id, *args)
    except LeaseBusy:
        # A live worker holds the job: check again once its lease could have lapsed.
        hold_for_retry(context(), job_id, lease, settings.lease_ttl_s)
        raise task.retry(countdown=settings.lease_ttl_s) from None
    except TRANSIENT as e:
        if task.request.retries < settings.task_max_retries:
            delay = min(60, 2 ** task.request.retries)
            log.warning("job %s: %s; retry in %ss", job_id, e, delay)
            hold_for_retry(context(), job_id, lease, delay)
            raise task.retry(exc=e, countdown=delay, max_retries=None) from None
        fail_job(context(), job_id, f"gave up after {task.request.retries} retries: {e}")
    except FacesenseError as e:
        fail_job(context(), job_id, str(e))
    except Exception as e:
        log.exception("job %s: unexpected error", job_id)
        fail_job(context(), job_id, f"internal error: {type(e).__name__}: {e}")
    return None


@app.task(name=PLAN_CLASSIFY, bind=True, max_retries=None)
def plan_classify(self, job_id: str):
    """List a scoring job's source and queue its shards."""
    run_job_step(self, job_id, leases.PLAN, classify.plan)


@app.task(name=CLASSIFY_SHARD, bind=True, max_retries=None)
def classify_shard(self, job_id: str, index: int):
    """Score one shard of a job."""
    run_job_step(self, job_id, leases.shard(index), classify.run_shard, index)


@app.task(name=FINALIZE_CLASSIFY, bind=True, max_retries=None)
def finalize_classify(self, job_id: str):
    """Merge a job's shard outputs and mark it succeeded."""
    run_job_step(self, job_id, leases.FINALIZE, classify.finalize)


@app.task(name=TRAIN, bind=True, max_retries=None)
def train(self, job_id: str):
    """Train a model version from a labelled folder (resumes from its last checkpoint)."""
    run_job_step(self, job_id, leases.TRAINING, training.run_training)


@app.task(name=DELIVER, bind=True, max_retries=None)
def deliver_webhook(self, job_id: str):
    """POST a finished job's record to its callback URL; a failure is retried later (countdown),
    so a scoring worker is held for one bounded attempt at a time, never for the backoff."""
    attempt = self.request.retries + 1
    try:
        delay = deliver(context().jobs, settings, job_id, attempt)
    except TRANSIENT as e:
        log.warning("job %s: webhook attempt %d: %s", job_id, attempt, e)  # Redis or storage
        delay = backoff(settings, attempt) if attempt < settings.webhook_max_attempts else None
    if delay is not None:
        raise self.retry(countdown=delay)
