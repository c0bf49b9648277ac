"""A scoring job as plain functions: plan into shards, score a shard, finalise the results."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice

from facesense.errors import FacesenseError, SourceError
from facesense.inputs.sources import list_images
from facesense.outputs.results import bounded, shard_rows, write_results
from facesense.outputs.thumbnails import writer_for
from facesense.queue import CLASSIFY_SHARD, FINALIZE_CLASSIFY
from facesense.state import leases
from facesense.state.leases import Lease, LeaseBusy
from facesense.state.status import JobStatus
from facesense.storage import read_limited
from facesense.storage.layout import RESULT_FILES, RETRY_KEYS, job_key, plan_key, shard_key
from worker.context import Context
from worker.inference import error_row, score

log = logging.getLogger(__name__)
PLAN_BATCH = 64  # shards whose plan files are written together, then queued
PLAN_WRITERS = 16  # plan files written at once (S3 PUTs wait on the network)


def batched(items, n: int):
    """Successive lists of n items (the last may be shorter); itertools.batched is 3.12+."""
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def plan(ctx: Context, job_id: str) -> int:
    """List the source, write one plan file per shard, queue the shards; returns the shard count.

    Safe to run twice: plans are deterministic and only shards not yet counted are re-queued.
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
    if record.get("shards"):  # redelivered after the shards were queued
        return _queue_missing_shards(ctx, job_id, record["shards"])
    # The exact version was resolved once, at submission, and is on the record.
    if not ctx.jobs.set_status(job_id, JobStatus.RUNNING, precision=ctx.models.precision,
                               device=str(ctx.models.device), decoder=ctx.decoder):
        return 0  # cancelled meanwhile
    if record.get("retry_of"):  # only the images that failed in the earlier job
        images = iter(json.loads(ctx.store.get(job_key(job_id, RETRY_KEYS))))
    else:
        images = list_images(ctx.sources.get(record["source"]))
    total = shards = 0
    # Streamed: each batch of plan files is written (in parallel) and its shards queued while
    # the listing goes on, so a huge job starts scoring at once. `shards` is set at the end.
    with ThreadPoolExecutor(PLAN_WRITERS, thread_name_prefix="plan") as pool:
        for batch in batched(enumerate(batched(images, ctx.settings.shard_size)), PLAN_BATCH):
            list(pool.map(lambda item: ctx.store.put(plan_key(job_id, item[0]),
                                                     json.dumps(item[1]).encode()), batch))
            if ctx.jobs.get_field(job_id, "status") != JobStatus.RUNNING:
                return 0  # cancelled while listing: its record is final, leave it as it is
            total, shards = total + sum(len(keys) for _, keys in batch), shards + len(batch)
            # never lower: a re-run plan must not hide shards an earlier run queued (cancel
            # merges the counted shards among `planned`)
            ctx.jobs.update(job_id, total=total, planned=max(shards, record.get("planned") or 0))
            for index, _ in batch:
                ctx.enqueue(CLASSIFY_SHARD, [job_id, index])
    if not total:
        raise SourceError(f"no images found in {record['source']} "
                          "(extensions: jpg, jpeg, png, webp, bmp, gif, tif, tiff)")
    ctx.jobs.update(job_id, shards=shards)
    # Set shards, then read the count: if the last shard was counted before it could see
    # `shards`, the finaliser is queued here instead (a second one is harmless).
    if (ctx.jobs.get_field(job_id, "shards_done") or 0) >= shards:
        ctx.enqueue(FINALIZE_CLASSIFY, [job_id])
    log.info("job %s: %d images in %d shards", job_id, total, shards)
    return shards


def _queue_missing_shards(ctx: Context, job_id: str, shards: int) -> int:
    missing = ctx.shards.uncounted(job_id, shards)
    for index in missing:
        ctx.enqueue(CLASSIFY_SHARD, [job_id, index])
    if not missing:  # all counted: a plan that died before queueing the finaliser left it to us
        ctx.enqueue(FINALIZE_CLASSIFY, [job_id])
    return len(missing)


def run_shard(ctx: Context, job_id: str, index: int) -> bool:
    """Score one shard and count it once; queues the finaliser after the last shard.

    A shard already counted, or held by a live worker, is skipped; one redelivered before it
    was counted overwrites its own rows (the output key is deterministic) and the count bitmap
    adds it once: no duplicate rows, no double counting. After FACESENSE_SHARD_MAX_ATTEMPTS
    deliveries that never finished (the worker died each time), its images are scored one at a
    time, and an image a worker dies on becomes an error row.
    Returns True if rows were written.
    """
    record = ctx.jobs.get(job_id)
    if JobStatus(record["status"]).finished or ctx.shards.is_counted(job_id, index):
        return False  # a late or repeated delivery: its rows are already in
    try:
        with Lease(ctx.leases, job_id, ctx.settings.lease_ttl_s, leases.shard(index)):
            return _run_leased_shard(ctx, job_id, index, record)
    except LeaseBusy:
        return False  # a live worker is on it; the watchdog requeues it if that worker dies


def _run_leased_shard(ctx: Context, job_id: str, index: int, record: dict) -> bool:
    keys = json.loads(ctx.store.get(plan_key(job_id, index)))
    # Counted before scoring: a delivery whose worker dies mid-shard is never taken back.
    attempts = ctx.shards.count_attempt(job_id, index)
    try:
        if attempts > ctx.settings.shard_max_attempts:
            rows = _score_one_at_a_time(ctx, job_id, index, record, keys)
        else:
            rows = _score_shard(ctx, job_id, record, keys)
        if rows is None:  # cancelled mid-shard
            return False
        _save_and_count(ctx, job_id, index, record, rows)
    except BaseException:
        try:
            ctx.shards.count_attempt(job_id, index, -1)  # failed cleanly: retries are not deaths
        except Exception as e:  # Redis itself failed: the retry may count as one death
            log.warning("job %s: shard %d: could not take back its delivery: %s", job_id, index, e)
        raise
    return True


POISON = "not scored: a worker died while decoding or scoring this image"


def _score_one_at_a_time(ctx: Context, job_id: str, index: int, record: dict,
                         keys: list[str]) -> list[dict] | None:
    """After K deaths on a shard: each image alone, noting which is in flight, so a death names
    its image and the next delivery fails only that one (one more death per poison image)."""
    poison = ctx.shards.convict_in_flight(job_id, index)
    log.warning("job %s: shard %d: workers died on it; scoring its images one at a time "
                "(%d found to kill a worker so far)", job_id, index, len(poison))
    rows: list[dict] = []
    try:
        for position, key in enumerate(keys):
            if position in poison:
                rows.append(error_row(key, POISON))
                continue
            ctx.shards.note_in_flight(job_id, index, position)
            scored = _score_shard(ctx, job_id, record, [key], batch_size=1, threads=1)
            if scored is None:
                return None
            rows.extend(scored)
    finally:  # any way out but death: the image in flight was not poison
        ctx.shards.note_in_flight(job_id, index, None)
    return rows


def _score_shard(ctx: Context, job_id: str, record: dict, keys: list[str],
                 batch_size: int | None = None, threads: int | None = None) -> list[dict] | None:
    """The shard's rows, or None if the job was cancelled before they were all scored."""
    loaded = ctx.models.get(record["model_version"])
    source = ctx.sources.get(record["source"])
    rows = list(score(keys, loaded, partial(read_limited, source),
                      batch_size=batch_size or ctx.batch_size, threads=threads or ctx.threads,
                      max_pixels=ctx.settings.max_image_pixels,
                      max_bytes=ctx.settings.max_image_bytes,
                      should_stop=lambda: ctx.jobs.get_field(job_id, "status") == "cancelled",
                      decoder=ctx.decoder,
                      thumbs=writer_for(ctx.store, job_id, ctx.settings.thumbnails)))
    return rows if len(rows) == len(keys) else None


def _save_and_count(ctx: Context, job_id: str, index: int, record: dict, rows: list[dict]):
    """Write the shard's rows under its deterministic key, count it once, maybe finalise."""
    failed = sum(1 for r in rows if r["error"])
    body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    ctx.store.put(shard_key(job_id, index), body.encode())
    _, counted = ctx.shards.count(job_id, index, len(rows), failed)
    shards = ctx.jobs.get_field(job_id, "shards")  # 0 while the plan is still listing
    if shards and counted >= shards:
        ctx.enqueue(FINALIZE_CLASSIFY, [job_id])


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
    summary = bounded(write_results(ctx.store, job_id, rows, record["classes"]),
                      ctx.settings.summary_max_groups)
    if ctx.jobs.set_status(job_id, JobStatus.SUCCEEDED, results=_locations(ctx, job_id),
                           summary=summary):
        ctx.jobs.archive(job_id)
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
                                        record["classes"]), ctx.settings.summary_max_groups)
        ctx.jobs.update(job_id, results=_locations(ctx, job_id), summary=summary)
        log.info("job %s cancelled: kept %d images from %d of %d shards", job_id,
                 summary["overall"]["images"], len(counted), shards)
    ctx.jobs.update(job_id, partial=True)
    ctx.jobs.archive(job_id)
    ctx.jobs.announce_finished(job_id)
    return summary


def _locations(ctx: Context, job_id: str) -> dict:
    return {name: ctx.store.uri_for(job_key(job_id, name))
            for name in RESULT_FILES}

