"""A scoring job's control steps: plan it into shards for the scheduler, then finalise it.

Torch-free: these run on the control queue, in the light worker beside each scoring worker.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

from facesense.errors import FacesenseError, SourceError
from facesense.inputs.sources import list_images
from facesense.outputs.results import bounded, shard_rows, write_results
from facesense.outputs.timeline import options as timeline_options
from facesense.queue import FINALIZE_CLASSIFY
from facesense.state import leases
from facesense.state.leases import Lease, LeaseBusy
from facesense.state.status import JobStatus
from facesense.storage.layout import RESULT_FILES, RETRY_KEYS, job_key, plan_key
from worker.context import Context
from worker.jobs import top_up

log = logging.getLogger(__name__)
PLAN_BATCH = 64  # shards whose plan files are written together, then released
PLAN_WRITERS = 16  # plan files written at once (S3 PUTs wait on the network)


def batched(items, n: int):
    """Successive lists of n items (the last may be shorter); itertools.batched is 3.12+."""
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def plan(ctx: Context, job_id: str) -> int:
    """List the source, write one plan file per shard, hand the shards to the scheduler;
    returns the shard count (for a re-run plan: the shards still to do).

    Safe to run twice: plans are deterministic and the scheduler keeps its cursor.
    """
    try:
        with Lease(ctx.leases, job_id, ctx.settings.lease_ttl_s, leases.PLAN):
            return _plan(ctx, job_id)
    except LeaseBusy:
        return 0  # a live worker is planning it


def _plan(ctx: Context, job_id: str) -> int:
    record = ctx.jobs.get(job_id)
    if JobStatus(record["status"]).finished:
        return 0
    _register(ctx, record)
    if record.get("shards"):  # redelivered after the listing ended
        return _resume(ctx, job_id, record["shards"])
    # Still queued: the job runs from its first shard. `planned` says the listing started.
    ctx.jobs.update(job_id, planned=record.get("planned") or 0)
    if record.get("retry_of"):  # only the images that failed in the earlier job
        images = iter(json.loads(ctx.store.get(job_key(job_id, RETRY_KEYS))))
    else:
        images = list_images(ctx.sources.get(record["source"], record.get("scope")))
    total = shards = 0
    # Streamed: each batch of plan files is written (in parallel) and its shards released
    # while the listing goes on, so a huge job starts scoring at once. `shards` is set last.
    with ThreadPoolExecutor(PLAN_WRITERS, thread_name_prefix="plan") as pool:
        for batch in batched(enumerate(batched(images, ctx.settings.shard_size)), PLAN_BATCH):
            list(pool.map(lambda item: ctx.store.put(plan_key(job_id, item[0]),
                                                     json.dumps(item[1]).encode()), batch))
            if JobStatus(ctx.jobs.get_field(job_id, "status")).finished:
                return 0  # cancelled while listing: its record is final, leave it as it is
            total, shards = total + sum(len(keys) for _, keys in batch), shards + len(batch)
            # never lowered: a re-run plan must not hide shards an earlier run released
            # (cancel merges the counted shards among `planned`)
            ctx.jobs.update(job_id, total=total, planned=max(shards, record.get("planned") or 0))
            ctx.sched.add(job_id, shards)
            top_up(ctx)
    if not total:
        raise SourceError(f"no images found in {record['source']} "
                          "(extensions: jpg, jpeg, png, webp, bmp, gif, tif, tiff)")
    ctx.jobs.update(job_id, shards=shards)
    ctx.sched.add(job_id, shards, listed=True)
    # Set shards, then read the count: if the last shard was counted before it could see
    # `shards`, the finaliser is queued here instead (a second one is harmless).
    if (ctx.jobs.get_field(job_id, "shards_done") or 0) >= shards:
        ctx.enqueue(FINALIZE_CLASSIFY, [job_id])
    log.info("job %s: %d images in %d shards", job_id, total, shards)
    return shards


def _register(ctx: Context, record: dict) -> None:
    """Give the job to the scheduler with its priority and its API key's quotas (as the API
    set them on the record; a job queued some other way takes this worker's settings)."""
    quota = record.get("quota") or {"jobs": ctx.settings.key_max_running_jobs,
                                    "shards": ctx.settings.key_max_shards}
    ctx.sched.register(record["id"], record.get("owner"), record.get("priority") or "normal",
                       max_jobs=quota["jobs"], max_shards=quota["shards"])


def _resume(ctx: Context, job_id: str, shards: int) -> int:
    """A plan run again after its listing ended: the shards are the scheduler's (a vanished
    worker's shard comes back through the watchdog); queue the finaliser if all are counted."""
    missing = ctx.shards.uncounted(job_id, shards)
    if not missing:  # a plan that died before queueing the finaliser left it to us
        ctx.enqueue(FINALIZE_CLASSIFY, [job_id])
        return 0
    ctx.sched.add(job_id, shards, listed=True)
    top_up(ctx)
    return len(missing)


def finalize(ctx: Context, job_id: str) -> dict | None:
    """Merge shard outputs into results.jsonl / .csv / summary.json and finish the job."""
    # LeaseBusy propagates: the task retries after a lease TTL, so a cancel that lands while
    # another worker merges is still finished by this delivery.
    with Lease(ctx.leases, job_id, ctx.settings.lease_ttl_s, leases.FINALIZE):
        return _finalize(ctx, job_id)


def _finalize(ctx: Context, job_id: str) -> dict | None:
    record = ctx.jobs.get(job_id)
    if record["status"] == JobStatus.CANCELLED and "partial" not in record:
        return _finalize_cancelled(ctx, job_id, record)
    if JobStatus(record["status"]).finished:
        return None
    if record["shards_done"] < record["shards"]:
        raise FacesenseError(f"finalise called with {record['shards_done']} of "
                             f"{record['shards']} shards done")
    rows = shard_rows(ctx.store, job_id, range(record["shards"]))
    summary = bounded(write_results(ctx.store, job_id, rows, record["classes"],
                                    compare_max_groups=ctx.settings.compare_max_groups,
                                    faces=bool(record.get("faces")), **timeline_options(record)),
                      ctx.settings.summary_max_groups)
    if ctx.jobs.set_status(job_id, JobStatus.SUCCEEDED, results=_locations(ctx, job_id),
                           summary=summary):
        ctx.jobs.archive(job_id)
        ctx.sched.forget(job_id)
        top_up(ctx)  # a job its key's quota held back may start now
    elif ctx.jobs.get_field(job_id, "status") == JobStatus.CANCELLED:  # cancelled while merging
        return _finalize_cancelled(ctx, job_id, ctx.jobs.get(job_id))
    return summary


def _finalize_cancelled(ctx: Context, job_id: str, record: dict) -> dict | None:
    """A cancelled job keeps the rows of the shards counted before the cancel, marked partial,
    and then sends its webhook (the cancel left that to this step)."""
    summary, shards = None, record.get("shards") or record.get("planned") or 0
    if shards:
        uncounted = set(ctx.shards.uncounted(job_id, shards))
        counted = [i for i in range(shards) if i not in uncounted]
        summary = bounded(write_results(ctx.store, job_id, shard_rows(ctx.store, job_id, counted),
                                        record["classes"],
                                        compare_max_groups=ctx.settings.compare_max_groups,
                                        faces=bool(record.get("faces")),
                                        **timeline_options(record)),
                          ctx.settings.summary_max_groups)
        ctx.jobs.update(job_id, results=_locations(ctx, job_id), summary=summary)
        log.info("job %s cancelled: kept %d images from %d of %d shards", job_id,
                 summary["overall"]["images"], len(counted), shards)
    ctx.jobs.update(job_id, partial=True)
    ctx.jobs.archive(job_id)
    ctx.sched.forget(job_id)
    top_up(ctx)
    ctx.jobs.announce_finished(job_id)
    return summary


def _locations(ctx: Context, job_id: str) -> dict:
    return {name: ctx.store.uri_for(job_key(job_id, name))
            for name in RESULT_FILES}

