"""The scoring and training worker's tasks: thin shells over the plain job functions."""

from __future__ import annotations

import functools
import logging

from celery.signals import worker_ready, worker_shutdown

from facesense.logs import bind_job
from facesense.queue import CLASSIFY_SHARD, TRAIN
from facesense.state import leases
from worker import classify, metrics, sidecar, training
from worker.celery_app import app, settings
from worker.context import Context, build_context
from worker.jobs import TRANSIENT, run_job_step

log = logging.getLogger(__name__)


@functools.cache
def context() -> Context:
    """This process's context, built on first use (after any fork)."""
    ctx = build_context(settings, lambda name, args: app.send_task(name, args=args))
    ctx.serves = frozenset(app.amqp.queues.consume_from or ())  # the worker's -Q, once set
    return ctx


@worker_ready.connect
def on_ready(sender=None, **_):
    """Start the control worker beside this one; a solo worker also builds its context (and
    loads torch) before its first task. Prefork pools build theirs in each child instead."""
    if settings.control_sidecar:
        sidecar.start()
    if type(getattr(sender, "pool", None)).__module__.endswith(".solo"):
        context()
        metrics.serve(settings.worker_metrics_port)  # this process runs the tasks it counts
    elif settings.worker_metrics_port:
        log.warning("FACESENSE_WORKER_METRICS_PORT needs the solo pool (-P solo): not served")


@worker_shutdown.connect
def on_shutdown(**_):
    """The control worker beside this one stops with it (it finishes its tasks first)."""
    sidecar.stop()


@app.task(name=CLASSIFY_SHARD, bind=True, max_retries=None)
def classify_shard(self, job_id: str | None = None, index: int | None = None):
    """Score a shard: the one the scheduler picks now (a token), or the one named (a retry)."""
    ctx = context()
    if job_id is None:
        try:
            picked = classify.take_turn(ctx)
        except TRANSIENT as e:  # Redis away: keep the token, try again shortly
            raise self.retry(countdown=min(60, 2 ** self.request.retries), exc=e) from None
        if picked is None:
            return
        job_id, index = picked
        bind_job(job_id, self.name)
    try:
        run_job_step(self, context, settings, job_id, leases.shard(index), classify.run_shard,
                     index)
    finally:
        classify.ended(ctx, job_id, index)


@app.task(name=TRAIN, bind=True, max_retries=None)
def train(self, job_id: str):
    """Train a model version from a labelled folder (resumes from its last checkpoint)."""
    # a retry raises out of run_job_step, so a run that will resume keeps its checkpoint
    run_job_step(self, context, settings, job_id, leases.TRAINING, training.run_training)
    try:
        training.drop_checkpoints(context(), job_id)
    except Exception as e:  # the job's end stands; the files are only disk
        log.warning("job %s: could not delete its checkpoints: %s", job_id, e)
