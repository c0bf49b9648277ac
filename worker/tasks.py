"""The scoring and training worker: its context, its start and stop, and the table's tasks
for the inference and training queues (thin shells over worker.runner)."""

from __future__ import annotations

import functools
import logging

from celery.signals import worker_ready, worker_shutdown

from facesense.queue import INFERENCE_QUEUE, TRAINING_QUEUE, sender
from worker import metrics, runner, sidecar
from worker.celery_app import app, settings
from worker.context import Context, build_context
from worker.model_cache import add_models

log = logging.getLogger(__name__)


@functools.cache
def context() -> Context:
    """This process's context, built on first use (after any fork)."""
    ctx = add_models(build_context(settings, sender(app)))
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


# The table's rows on the scoring and training queues: a shard (a token, or a retry naming
# it) and a training run; each a thin shell over the runner (worker.steps).
runner.register(app, context, (INFERENCE_QUEUE, TRAINING_QUEUE))
