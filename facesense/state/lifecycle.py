"""A job's lifecycle in one place: what follows every step, and how a job is finished,
failed or cancelled, keeping the scheduler, the record and the webhook consistent.

The API (its cancel) and the workers (every step, through worker.runner) end jobs the same
way: both build it with facesense.queue.lifecycle, which names the tasks it sends. Nothing
else sends shard tokens or queues a finaliser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from facesense.errors import FacesenseError
from facesense.state.records import JobRecords
from facesense.state.scheduler import Scheduler
from facesense.state.status import JobStatus

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    """The services a job's end touches: its record (and webhook), the scheduler, the queue."""

    jobs: JobRecords
    sched: Scheduler
    enqueue: Callable[[str, list], None]  # send a task by name with positional args
    token: str  # the shard token's task name
    token_queue: str  # the queue tokens wait in (its length caps how many are sent)
    finalize: str  # the finaliser's task name

    def after_step(self, job_id: str | None = None, counted: bool = False,
                   refill: bool = True) -> None:
        """What follows every step: send the shard tokens the scheduler now wants (refill),
        and, after a step that counted shards (counted), queue the job's finaliser once all
        are in.

        Never raises: a lost token or finaliser is sent again by the watchdog's sweep.
        """
        try:
            for _ in range(self.sched.tokens_wanted(self.token_queue) if refill else 0):
                self.enqueue(self.token, [])
        except Exception as e:  # Redis or the broker away: the next step or sweep tops up
            log.warning("could not send shard tokens: %s", e)
        if counted and job_id is not None:
            try:
                if self.finalize_due(job_id):
                    self.queue_finalize(job_id)
            except Exception as e:
                log.warning("job %s: could not queue its finaliser: %s", job_id, e)

    def queue_finalize(self, job_id: str) -> None:
        """Send the job's finaliser (the one place it is queued)."""
        self.enqueue(self.finalize, [job_id])

    def finalize_due(self, job_id: str) -> bool:
        """True once the listing set the job's shard count and every shard is counted, while
        the job is unfinished (a cancelled job's finaliser is queued by its cancel)."""
        get = self.jobs.get_field
        shards = get(job_id, "shards")  # 0 while the plan is still listing
        if not shards or (get(job_id, "shards_done") or 0) < shards:
            return False
        status = get(job_id, "status")
        return status is not None and not JobStatus(status).finished

    def finish(self, job_id: str, **fields) -> bool:
        """Mark a job succeeded with fields (its webhook queued), archive it, free its share of
        the scheduler; False if it had already finished."""
        if not self.jobs.set_status(job_id, JobStatus.SUCCEEDED, **fields):
            return False
        self.ended(job_id)
        return True

    def fail(self, job_id: str, reason: str) -> bool:
        """Mark a job (of any type) failed with a reason, unless it already finished; archive
        it and free its share of the scheduler. False if it had already finished."""
        if not (self.jobs.exists(job_id)
                and self.jobs.set_status(job_id, JobStatus.FAILED, error=reason)):
            log.warning("job %s: not failed (%s): it had already finished or is gone", job_id,
                        reason)
            return False
        log.warning("job %s failed: %s", job_id, reason)
        self.ended(job_id)
        return True

    def cancel(self, job_id: str) -> bool:
        """Cancel a job; False if it had already finished. A scoring job's finaliser merges
        the shards counted so far and then sends its webhook; any other sends it now."""
        scoring = self.jobs.get_field(job_id, "type") == "classify"
        if not self.jobs.set_status(job_id, JobStatus.CANCELLED, notify=not scoring,
                                    error="cancelled by request"):
            return False
        if not scoring:  # a training run stops at its next batch; its key's slot is free now
            self.ended(job_id)
            return True
        try:  # the finaliser merges the partial results, then calls cancelled()
            self.queue_finalize(job_id)
        except Exception as e:
            log.warning("job %s: could not queue its partial results: %s", job_id, e)
            self.jobs.announce_finished(job_id)
        return True

    def cancelled(self, job_id: str, announce: bool = True) -> None:
        """A cancel's worker side is done (partial results merged, or training stopped):
        archive it, free its share of the scheduler, and send the webhook it waited for."""
        self.ended(job_id)
        if announce:
            self.jobs.announce_finished(job_id)

    def ended(self, job_id: str) -> None:
        """A job reached its final status: its shards leave the rings (and the backlog the
        autoscalers read), a job its key's quota held may start, its record is archived."""
        try:
            self.sched.forget(job_id)
        except Exception as e:
            log.warning("job %s: could not drop its scheduling state: %s", job_id, e)
        self.after_step()
        try:
            self.jobs.archive(job_id)
        except FacesenseError as e:  # the store may be what failed: Redis keeps the record
            log.warning("job %s: could not archive its record: %s", job_id, e)
