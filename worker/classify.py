"""A scoring job's data step: score the shard the scheduler picked (or a retried one).

Counted once whatever the deliveries; the runner queues the finaliser after the last shard.
"""

from __future__ import annotations

import json
import logging
from functools import partial

from facesense.inputs.video.plan import is_video_plan
from facesense.outputs.rows import error_row
from facesense.outputs.thumbnails import writer_for
from facesense.state.status import JobStatus
from facesense.storage import read_limited
from facesense.storage.layout import plan_key, shard_key
from worker.context import Context
from worker.inference import Scorer
from worker.video import video_poison_row, video_rows

log = logging.getLogger(__name__)


def run_shard(ctx: Context, job_id: str, index: int) -> bool:
    """Score one shard (under its lease, taken by the runner) and count it once.

    A shard already counted is skipped (one a live worker holds never gets here); one
    redelivered before it was counted overwrites its own rows (the output key is
    deterministic) and the count bitmap adds it once: no duplicate rows, no double counting.
    After FACESENSE_SHARD_MAX_ATTEMPTS deliveries that never finished (the worker died each
    time), its images are scored one at a time, and an image a worker dies on becomes an
    error row.
    Returns True if rows were written.
    """
    record = ctx.jobs.get(job_id)
    if JobStatus(record["status"]).finished or ctx.shards.is_counted(job_id, index):
        return False  # a late or repeated delivery: its rows are already in
    keys = json.loads(ctx.store.get(plan_key(job_id, index)))
    # Counted before scoring: a delivery whose worker dies mid-shard is never taken back.
    attempts = ctx.shards.count_attempt(job_id, index)
    try:
        if record["status"] == JobStatus.QUEUED:  # the first shard starts the job
            loaded = ctx.models.get(record["model_version"])  # loaded now: its precision is known
            ctx.jobs.set_status(job_id, JobStatus.RUNNING, precision=loaded.precision,
                                precision_reason=loaded.reason,
                                device=str(ctx.models.device), decoder=ctx.decoder)
        if attempts > ctx.settings.shard_max_attempts and is_video_plan(keys):
            rows = [video_poison_row(keys, bool(record.get("faces")))]  # its range, one row
        elif attempts > ctx.settings.shard_max_attempts:
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
                rows.append(error_row(key, POISON, faces=bool(record.get("faces"))))
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
    source = ctx.sources.get(record["source"], record.get("scope"))
    faces = None
    if record.get("faces"):  # a video's time range has its own follower (unopened: no fps)
        faces = (ctx.faces.follower(loaded, keys["fps"]) if is_video_plan(keys) and "fps" in keys
                 else ctx.faces.cutter(loaded))
    if is_video_plan(keys):  # a time range of one video (worker.video)
        stop = lambda: ctx.jobs.get_field(job_id, "status") == JobStatus.CANCELLED  # noqa: E731
        rows = list(video_rows(keys, loaded, source, batch_size=batch_size or ctx.batch_size,
                               faces=faces, should_stop=stop))
        return None if stop() else rows
    scorer = Scorer(loaded, partial(read_limited, source),
                    batch_size=batch_size or ctx.batch_size, threads=threads or ctx.threads,
                    max_pixels=ctx.settings.max_image_pixels,
                    max_bytes=ctx.settings.max_image_bytes, decoder=ctx.decoder, faces=faces)
    rows = list(scorer.score(
        keys, should_stop=lambda: ctx.jobs.get_field(job_id, "status") == JobStatus.CANCELLED,
        thumbs=writer_for(ctx.store, job_id, ctx.settings.thumbnails)))
    return rows if images_in(rows) == len(keys) else None


def images_in(rows: list[dict]) -> int:
    """How many images rows are of: with faces on, an image's faces share one (its first row)."""
    return sum(1 for r in rows if not r.get("face"))  # face absent, None (no face, error) or 0


def _save_and_count(ctx: Context, job_id: str, index: int, record: dict, rows: list[dict]):
    """Write the shard's rows under its deterministic key and count it once."""
    failed = sum(1 for r in rows if r["error"])  # an error row is one whole image
    body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    ctx.store.put(shard_key(job_id, index), body.encode())
    ctx.shards.count(job_id, index, images_in(rows), failed)
