"""The table of job steps: one row per step of a job's life, all run by worker.runner; and
the control steps (plan, finalize, the webhook: torch-free) in this package's modules. It may
import the core; a row names its function as a path, so the table imports no step.

A row names the Celery task that runs the step and its queue, the lease the step runs under
(a function of the task's arguments after the job id: a shard index -> that shard's lease),
the plain function ("module:function", imported on first use, so the torch-free control
worker never imports a scoring step), and what a busy lease means: RETRY (run again once the
holder's lease could have lapsed) or SKIP (a live worker does it; the watchdog requeues it if
that worker dies). `counts`: given the step's result, whether the finaliser may be due now.
`shard`: a shard the scheduler hands out; a token (its task sent with no arguments) takes a
turn, the job's type picks the row, and the shard's end frees its key's in-flight slot.

A new shard kind or job type is one more row and its function, e.g. video shards:
    Step("shard", "video", VIDEO_SHARD, INFERENCE_QUEUE, "worker.video:run_shard",
         leases.shard, Busy.SKIP, counts=bool, shard=True)
A row is found by its job type and step name (`of`); `table()` prints the table.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from facesense.outputs.webhooks import DELIVER
from facesense.queue import (
    CLASSIFY_SHARD,
    CONTROL_QUEUE,
    FINALIZE_CLASSIFY,
    INFERENCE_QUEUE,
    PLAN_CLASSIFY,
    TRAIN,
    TRAINING_QUEUE,
)
from facesense.state import leases


class Busy(Enum):
    """What a step does when another live worker holds its lease."""

    RETRY = "retry after a lease TTL"
    SKIP = "skip"


@dataclass(frozen=True)
class Step:
    """One row: a job step, the task and queue that run it, its lease and its function."""

    name: str
    job_type: str | None  # the job type it belongs to (None: a step of every type)
    task: str
    queue: str
    run: str  # "module:function", called as function(ctx, job_id, *args)
    lease: Callable[..., str] | None  # the lease name from the task's args after the job id
    busy: Busy = Busy.RETRY
    doc: str = ""
    # it counts shards: given its result, whether the finaliser may be due after it
    counts: Callable[[object], bool] | None = None
    shard: bool = False  # picked by the scheduler (tokens), holding a key's in-flight slot
    passes: tuple[str, ...] = ()  # what the runner hands it by keyword: "lease", "attempt"
    cleanup: str | None = None  # "module:function"(ctx, job_id) once the step is over for good

    def function(self) -> Callable:
        """The step's plain function."""
        return self.resolve(self.run)

    @staticmethod
    @functools.cache
    def resolve(path: str) -> Callable:
        """A "module:function" path's function, imported on first use."""
        module, _, name = path.partition(":")
        return getattr(importlib.import_module(module), name)


STEPS = (
    Step("plan", "classify", PLAN_CLASSIFY, CONTROL_QUEUE, "worker.steps.plan:plan",
         lambda: leases.PLAN, Busy.SKIP, counts=lambda _: True,  # it sets the shard count
         doc="List a scoring job's source and hand its shards to the scheduler."),
    Step("shard", "classify", CLASSIFY_SHARD, INFERENCE_QUEUE, "worker.classify:run_shard",
         leases.shard, Busy.SKIP, counts=bool, shard=True,  # True: it wrote and counted its rows
         doc="Score a shard: the one the scheduler picks now (a token), or the one named."),
    Step("finalize", "classify", FINALIZE_CLASSIFY, CONTROL_QUEUE, "worker.steps.finalize:finalize",
         lambda: leases.FINALIZE, Busy.RETRY,
         doc="Merge a job's shard outputs and finish it (a cancelled one: its partial results)."),
    Step("train", "train", TRAIN, TRAINING_QUEUE, "worker.training:run_training",
         lambda: leases.TRAINING, Busy.RETRY, passes=("lease",),
         cleanup="worker.training:drop_checkpoints",
         doc="Train a model version from a labelled folder (resumes from its last checkpoint)."),
    Step("deliver", None, DELIVER, CONTROL_QUEUE, "worker.steps.finalize:deliver_webhook", None,
         passes=("attempt",),
         doc="POST a finished job's record to its callback URL; a failure retries later."),
)


def of(job_type: str | None, name: str) -> Step:
    """The row of a job type's step (plan, shard, finalize, train; deliver is every type's)."""
    for s in STEPS:
        if s.name == name and s.job_type in (job_type, None):
            return s
    raise KeyError(f"no step {name!r} for jobs of type {job_type!r}")


def shard_of(job_type: str | None) -> Step:
    """The shard row of a job type (a scoring job's when the record is gone)."""
    return of(job_type if any(s.shard and s.job_type == job_type for s in STEPS) else "classify",
              "shard")


def table() -> str:
    """The table as text (docs, reports): one line per row."""
    lines = [f"{'step':9} {'type':9} {'task':28} {'queue':9} {'lease':14} busy   run"]
    for s in STEPS:
        lease = "-" if s.lease is None else s.lease(*(["i"] if s.shard else []))
        lines.append(f"{s.name:9} {s.job_type or '*':9} {s.task:28} {s.queue:9} {lease:14} "
                     f"{s.busy.name.lower() if s.lease else '-':6} {s.run}")
    return "\n".join(lines)
