"""The control worker: plans, finalisers, webhooks and the watchdog, off the data path.

`celery -A worker.control worker -Q control -P threads -c 16`. Torch-free and light: each
scoring worker starts one beside it (worker.sidecar), so these steps never wait behind shards
and a slow webhook receiver holds a thread here, never a scoring worker.
"""

from __future__ import annotations

import functools
import logging

from celery.signals import worker_ready

from facesense.queue import CONTROL_QUEUE, sender
from worker import runner, watchdog
from worker.context import Context, boot, build_context

log = logging.getLogger(__name__)
settings, app = boot()  # a bad setting stops the worker at start
# Not a scoring worker: it answers no pings, so worker counts (tests, Flower) stay true.
app.conf.worker_enable_remote_control = False


@functools.cache
def context() -> Context:
    """This process's context (no models), built on first use, and its watchdog."""
    ctx = build_context(settings, sender(app))
    watchdog.start(ctx)  # one sweeper is elected among all control workers
    return ctx


@worker_ready.connect
def on_ready(**_):
    """Build the context (and start the watchdog) before the first task."""
    context()


# The table's rows on the control queue: plan, finalize, webhooks (worker.steps).
runner.register(app, context, (CONTROL_QUEUE,))
