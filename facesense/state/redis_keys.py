"""Every Redis key the system writes, named in one place (the broker's own queues aside)."""

from __future__ import annotations

PREFIX = "facesense:"
RECENT = PREFIX + "jobs"  # sorted set: job id scored by creation time
ACTIVE = PREFIX + "active"  # set: ids of queued and running jobs, for the watchdog
FINISHED_COUNTS = PREFIX + "finished"  # hash: "<type>:<status>" -> jobs ended so (metrics)


SWEEPER = PREFIX + "watchdog:sweeper"  # string: the worker that sweeps for the whole cluster
SCHED_RINGS = tuple(f"{PREFIX}sched:ring:{p}" for p in ("high", "normal", "low"))  # lists of
# job ids with shards to release, one per priority, highest first (the scheduler's Lua is
# given the per-job and per-owner names below as templates: state.scheduler_lua)
OWNER_PREFIX = PREFIX + "sched:owner:"
TRAINING_SHARED = PREFIX + "sched:training-shared"  # sorted set: training jobs running on a
# worker that also serves the inference queue, scored by when their note lapses


def owned(owner: str) -> str:
    """The sorted set of one API key's jobs, scored by creation time."""
    return f"{RECENT}:owner:{owner}"


def tagged(tag: str, owner: str | None = None) -> str:
    """The sorted set of the jobs carrying a tag (only owner's, if given), by creation time."""
    return f"{owned(owner)}:tag:{tag}" if owner else f"{RECENT}:tag:{tag}"


def job(job_id: str) -> str:
    """The hash of a job's record."""
    return f"{PREFIX}job:{job_id}"


def shard_bits(job_id: str) -> str:
    """A bitmap with one bit per shard, set once the shard's rows are counted."""
    return f"{job(job_id)}:shards"


def attempts(job_id: str) -> str:
    """A hash: shard index -> deliveries that started scoring it."""
    return f"{job(job_id)}:attempts"


def in_flight(job_id: str) -> str:
    """A hash: shard index -> position of the image being scored alone right now."""
    return f"{job(job_id)}:alone"


def poison(job_id: str, index: int) -> str:
    """A set: positions in a shard of images a worker died on."""
    return f"{job(job_id)}:poison:{index}"


def lease(job_id: str, name: str) -> str:
    """A lease on the job or a part of it (see state.leases for the names)."""
    return f"{job(job_id)}:{name}"


def requeued(job_id: str, name: str) -> str:
    """A marker: the work under lease name was put back on the queue."""
    return f"{job(job_id)}:requeued:{name}"


def sched(job_id: str) -> str:
    """A hash: the job's scheduling state (next shard to release, shards planned, owner...)."""
    return f"{job(job_id)}:sched"


def sched_retry(job_id: str) -> str:
    """A list: shard indexes to release again before new ones (requeued work)."""
    return f"{job(job_id)}:sched:retry"


def sched_picked(job_id: str) -> str:
    """A sorted set: shards picked and not yet counted, scored by when they were picked."""
    return f"{job(job_id)}:sched:picked"


def owner_running(owner: str) -> str:
    """A set: one API key's jobs that have started a shard and not finished (its quota)."""
    return f"{OWNER_PREFIX}{owner}:running"


def owner_in_flight(owner: str) -> str:
    """A sorted set: one API key's shards in flight ("job:index"), scored by when they lapse."""
    return f"{OWNER_PREFIX}{owner}:inflight"
