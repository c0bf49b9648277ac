"""What every job type shares in the worker: waiting to retry, and ending a job that cannot go on."""

from __future__ import annotations

import logging

from facesense.errors import FacesenseError
from facesense.queue import CLASSIFY_SHARD, INFERENCE_QUEUE
from facesense.state.status import JobStatus
from worker.context import Context

log = logging.getLogger(__name__)


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
