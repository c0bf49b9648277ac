"""Leases in Redis, renewed by a heartbeat thread: how a live worker says it still holds work."""

from __future__ import annotations

import logging
import os
import socket
import threading

from facesense.errors import FacesenseError
from facesense.jobs import JobRecords

log = logging.getLogger(__name__)


class LeaseBusy(FacesenseError):
    """Another live worker holds this work; try again after its lease expires."""

    code = "busy"


class LeaseLost(Exception):
    """This worker's lease lapsed (another worker may have taken the work): stop, touch nothing."""


class Lease:
    """A lease on a job (or on a part of it: name), kept alive while the work runs."""

    def __init__(self, jobs: JobRecords, job_id: str, ttl_s: int, name: str = "lease"):
        self.jobs, self.job_id, self.ttl, self.name = jobs, job_id, ttl_s, name
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.lost = False
        self._done = threading.Event()

    def __enter__(self) -> Lease:
        if not self.jobs.acquire_lease(self.job_id, self.owner, self.ttl, self.name):
            raise LeaseBusy(f"job {self.job_id} ({self.name}) is held by another worker")
        self.jobs.clear_requeued(self.job_id, self.name)
        threading.Thread(target=self._beat, daemon=True, name=f"lease-{self.name}").start()
        return self

    def _beat(self) -> None:
        while not self._done.wait(max(0.5, self.ttl / 3)):
            try:
                if not self.jobs.renew_lease(self.job_id, self.owner, self.ttl, self.name):
                    self.lost = True
                    return
            except Exception:  # Redis away for a moment: the next beat tries again
                log.warning("job %s: renewing lease %s failed", self.job_id, self.name)

    def check(self) -> None:
        """Raise LeaseLost if the lease lapsed."""
        if self.lost:
            raise LeaseLost(self.job_id)

    def __exit__(self, *_):
        self._done.set()
        if not self.lost:
            try:
                self.jobs.release_lease(self.job_id, self.owner, self.name)
            except Exception:  # it lapses by itself after ttl
                log.warning("job %s: releasing lease %s failed", self.job_id, self.name)
