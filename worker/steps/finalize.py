"""A scoring job's last step: merge its shard outputs and finish it (a cancelled job: its
partial results); and the webhook every finished job may send.

Torch-free: these run on the control queue, in the light worker beside each scoring worker.
"""

from __future__ import annotations

import logging

from facesense.errors import FacesenseError
from facesense.outputs.results import bounded, shard_rows, write_results
from facesense.outputs.timeline import options as timeline_options
from facesense.outputs.webhooks import backoff, deliver
from facesense.state.status import JobStatus
from facesense.storage.layout import RESULT_FILES, job_key
from worker.context import Context
from worker.runner import TRANSIENT, RetryIn, lifecycle

log = logging.getLogger(__name__)


def finalize(ctx: Context, job_id: str) -> dict | None:
    """Merge shard outputs into results.jsonl / .csv / summary.json and finish the job.

    Its row retries on a busy lease, so a cancel that lands while another worker merges is
    still finished by this delivery."""
    record = ctx.jobs.get(job_id)
    if record["status"] == JobStatus.CANCELLED and "partial" not in record:
        return _finalize_cancelled(ctx, job_id, record)
    if JobStatus(record["status"]).finished:
        return None
    if record["shards_done"] < record["shards"]:
        raise FacesenseError(f"finalise called with {record['shards_done']} of "
                             f"{record['shards']} shards done")
    summary = _merge(ctx, job_id, record, range(record["shards"]))
    moved = lifecycle(ctx).finish(job_id, results=_locations(ctx, job_id), summary=summary)
    if not moved and ctx.jobs.get_field(job_id, "status") == JobStatus.CANCELLED:  # cancelled while merging
        return _finalize_cancelled(ctx, job_id, ctx.jobs.get(job_id))
    return summary


def _finalize_cancelled(ctx: Context, job_id: str, record: dict) -> dict | None:
    """A cancelled job keeps the rows of the shards counted before the cancel, marked partial,
    and then sends its webhook (the cancel left that to this step)."""
    summary, shards = None, record.get("shards") or record.get("planned") or 0
    if shards:
        uncounted = set(ctx.shards.uncounted(job_id, shards))
        counted = [i for i in range(shards) if i not in uncounted]
        summary = _merge(ctx, job_id, record, counted)
        ctx.jobs.update(job_id, results=_locations(ctx, job_id), summary=summary)
        log.info("job %s cancelled: kept %d images from %d of %d shards", job_id,
                 summary["overall"]["images"], len(counted), shards)
    ctx.jobs.update(job_id, partial=True)
    lifecycle(ctx).cancelled(job_id)
    return summary


def _merge(ctx: Context, job_id: str, record: dict, shards) -> dict:
    """Merge these shards' rows into the result files; the record's bounded summary."""
    rows = shard_rows(ctx.store, job_id, shards)
    return bounded(write_results(ctx.store, job_id, rows, record["classes"],
                                 compare_max_groups=ctx.settings.compare_max_groups,
                                 faces=bool(record.get("faces")), videos=bool(record.get("videos")),
                                 **timeline_options(record)),
                   ctx.settings.summary_max_groups)


def _locations(ctx: Context, job_id: str) -> dict:
    return {name: ctx.store.uri_for(job_key(job_id, name))
            for name in RESULT_FILES}


def deliver_webhook(ctx: Context, job_id: str, attempt: int) -> None:
    """POST a finished job's record to its callback URL (one bounded attempt); a failure asks
    the runner for a retry later (countdown), so a thread never waits out the backoff."""
    try:
        delay = deliver(ctx.jobs, ctx.settings, job_id, attempt)
    except TRANSIENT as e:  # Redis or storage
        log.warning("job %s: webhook attempt %d: %s", job_id, attempt, e)
        delay = backoff(ctx.settings, attempt) if attempt < ctx.settings.webhook_max_attempts \
            else None
    if delay is not None:
        raise RetryIn(delay)
