"""A scoring job's first step: list its source into shards and hand them to the scheduler.

Torch-free: it runs on the control queue, in the light worker beside each scoring worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

from facesense.errors import SourceError
from facesense.inputs.video.plan import (
    is_video_plan,
    listed,
    retried,
    shard_plans,
    size_of,
)
from facesense.state.status import JobStatus
from facesense.storage.layout import RETRY_KEYS, job_key, plan_key
from worker.context import Context

log = logging.getLogger(__name__)
PLAN_BATCH = 64  # shards whose plan files are written together, then released
PLAN_WRITERS = 16  # plan files written at once (S3 PUTs wait on the network)


def batched(items, n: int):
    """Successive lists of n items (the last may be shorter); itertools.batched is 3.12+."""
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def plan(ctx: Context, job_id: str) -> Generator[None, None, int]:
    """List the source, write one plan file per shard, hand the shards to the scheduler;
    returns the shard count (for a re-run plan: the shards still to do).

    A generator: it yields after each batch of shards it releases, and the runner sends their
    tokens then, so a huge job starts scoring while its listing goes on. Safe to run twice:
    plans are deterministic and the scheduler keeps its cursor.
    """
    record = ctx.jobs.get(job_id)
    if JobStatus(record["status"]).finished:
        return 0
    _register(ctx, record)
    if record.get("shards"):  # redelivered after the listing ended
        return _resume(ctx, job_id, record["shards"])
    # Still queued: the job runs from its first shard. `planned` says the listing started.
    ctx.jobs.update(job_id, planned=record.get("planned") or 0)
    source = ctx.sources.get(record["source"], record.get("scope"))
    if record.get("retry_of"):  # only the images that failed in the earlier job
        items = retried(source, json.loads(ctx.store.get(job_key(job_id, RETRY_KEYS))))
    else:
        items = listed(source)  # (key, a manifest's t0 or None)
    # photos in groups of shard_size, each video probed and cut into time ranges
    plans = shard_plans(items, source, ctx.settings, record.get("video_fps"))
    total = shards = 0
    # Streamed: each batch of plan files is written (in parallel) and its shards released
    # while the listing goes on, so a huge job starts scoring at once. `shards` is set last.
    with ThreadPoolExecutor(PLAN_WRITERS, thread_name_prefix="plan") as pool:
        for batch in batched(enumerate(plans), PLAN_BATCH):
            list(pool.map(lambda item: ctx.store.put(plan_key(job_id, item[0]),
                                                     json.dumps(item[1]).encode()), batch))
            if JobStatus(ctx.jobs.get_field(job_id, "status")).finished:
                return 0  # cancelled while listing: its record is final, leave it as it is
            total, shards = total + sum(size_of(plan) for _, plan in batch), shards + len(batch)
            if any(is_video_plan(plan) for _, plan in batch):  # results.csv gets t and frame
                ctx.jobs.update(job_id, videos=True)
            # never lowered: a re-run plan must not hide shards an earlier run released
            # (cancel merges the counted shards among `planned`)
            ctx.jobs.update(job_id, total=total, planned=max(shards, record.get("planned") or 0))
            ctx.sched.add(job_id, shards)
            yield  # the runner sends these shards' tokens now
    if not total:
        raise SourceError(f"no images found in {record['source']} "
                          "(extensions: jpg, jpeg, png, webp, bmp, gif, tif, tiff; videos: "
                          "mp4, m4v, mov, webm, mkv, avi)")
    ctx.jobs.update(job_id, shards=shards)
    ctx.sched.add(job_id, shards, listed=True)
    # `shards` is set: the runner's after_step reads the count next, so if the last shard was
    # counted before it could see `shards`, the finaliser is queued then (a second is harmless)
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
    worker's shard comes back through the watchdog). All counted: a plan that died before its
    finaliser was queued left it to this run, and the runner's after_step queues it."""
    missing = ctx.shards.uncounted(job_id, shards)
    if missing:
        ctx.sched.add(job_id, shards, listed=True)
    return len(missing)
