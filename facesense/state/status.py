"""A job's status and ids: the enum, the one clock, and what a job id may look like."""

from __future__ import annotations

import time
import uuid
from enum import StrEnum

COUNTERS = ("total", "done", "failed", "shards", "shards_done")  # a record's progress fields


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True once nothing more will happen to the job."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


FINISHED = tuple(s.value for s in JobStatus if s.finished)


def new_job_id() -> str:
    """A time-sortable unique id: creation time in hex, then random."""
    return f"{int(time.time() * 1000):012x}{uuid.uuid4().hex[:12]}"


def now() -> float:
    """Unix time, the one clock job records use."""
    return round(time.time(), 3)


def valid_id(job_id: str) -> bool:
    """Job ids are short hex strings; anything else can't name a job (or a storage key)."""
    return 0 < len(job_id) <= 64 and all(c in "0123456789abcdef" for c in job_id)
