"""The control worker: plans, finalisers, webhooks and the watchdog, off the data path.

`celery -A worker.control worker -Q control -P threads -c 16`. Torch-free and light: each
scoring worker starts one beside it (worker.sidecar), so these steps never wait behind shards
and a slow webhook receiver holds a thread here, never a scoring worker.
"""

from __future__ import annotations

import functools
import logging

from celery.signals import worker_ready

from facesense.logs import setup_logging
from facesense.outputs.webhooks import DELIVER, backoff, deliver
from facesense.queue import FINALIZE_CLASSIFY, PLAN_CLASSIFY, make_celery
from facesense.settings import Settings
from facesense.state import leases
from worker import planning, watchdog
from worker.context import Context, build_context, check_settings
from worker.jobs import TRANSIENT, run_job_step

log = logging.getLogger(__name__)
settings = Settings.from_env()
setup_logging(settings.log_level, settings.log_format)
check_settings(settings)
app = make_celery(settings)
# Not a scoring worker: it answers no pings, so worker counts (tests, Flower) stay true.
app.conf.worker_enable_remote_control = False


@functools.cache
def context() -> Context:
    """This process's context (no models), built on first use, and its watchdog."""
    ctx = build_context(settings, lambda name, args: app.send_task(name, args=args),
                        scoring=False)
    watchdog.start(ctx)  # one sweeper is elected among all control workers
    return ctx


@worker_ready.connect
def on_ready(**_):
    """Build the context (and start the watchdog) before the first task."""
    context()


@app.task(name=PLAN_CLASSIFY, bind=True, max_retries=None)
def plan_classify(self, job_id: str):
    """List a scoring job's source and hand its shards to the scheduler."""
    run_job_step(self, context, settings, job_id, leases.PLAN, planning.plan)


@app.task(name=FINALIZE_CLASSIFY, bind=True, max_retries=None)
def finalize_classify(self, job_id: str):
    """Merge a job's shard outputs and mark it succeeded."""
    run_job_step(self, context, settings, job_id, leases.FINALIZE, planning.finalize)


@app.task(name=DELIVER, bind=True, max_retries=None)
def deliver_webhook(self, job_id: str):
    """POST a finished job's record to its callback URL; a failure is retried later
    (countdown), so a thread is held for one bounded attempt at a time, never the backoff."""
    attempt = self.request.retries + 1
    try:
        delay = deliver(context().jobs, settings, job_id, attempt)
    except TRANSIENT as e:
        log.warning("job %s: webhook attempt %d: %s", job_id, attempt, e)  # Redis or storage
        delay = backoff(settings, attempt) if attempt < settings.webhook_max_attempts else None
    if delay is not None:
        raise self.retry(countdown=delay)
