"""Leases in Redis, renewed by a heartbeat thread: how a live worker says it still holds work.

Lease names: TRAINING for a training job, PLAN and FINALIZE for a scoring job's first and last
steps, shard(i) for one shard. The watchdog requeues work whose lease lapsed; a requeue marker
keeps many watchdogs from queueing the same work twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis as redis_lib

from facesense.errors import FacesenseError
from facesense.state import redis_keys

log = logging.getLogger(__name__)

TRAINING, PLAN, FINALIZE = "lease", "plan:lease", "finalize:lease"


def shard(index: int | str) -> str:
    """The name of a shard's lease: held, with a heartbeat, by the worker scoring it."""
    return f"shard:{index}:lease"


def describe(name: str) -> str:
    """A lease name as a log line says it: training, plan, finalize, shard:3."""
    return "training" if name == TRAINING else name.removesuffix(":lease")


# Extend (ttl > 0) or drop (ttl 0) a lease, but only for the owner that holds it.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) else redis.call('DEL', KEYS[1]) end
return 1
"""


class Leases:
    """Take, renew, release and look up leases; note and clear requeued work."""

    def __init__(self, redis: redis_lib.Redis):
        self.redis = redis
        self._renew = redis.register_script(_RENEW)

    def acquire(self, job_id: str, name: str, owner: str, ttl_s: int) -> bool:
        """Take a lease unless another owner holds it (re-entrant for its owner)."""
        if self.redis.set(redis_keys.lease(job_id, name), owner, nx=True, ex=ttl_s):
            return True
        return self.renew(job_id, name, owner, ttl_s)

    def renew(self, job_id: str, name: str, owner: str, ttl_s: int) -> bool:
        """Extend the lease if owner still holds it."""
        return bool(self._renew(keys=[redis_keys.lease(job_id, name)], args=[owner, ttl_s]))

    def release(self, job_id: str, name: str, owner: str) -> None:
        """Give the lease up if owner holds it."""
        self._renew(keys=[redis_keys.lease(job_id, name)], args=[owner, 0])

    def alive(self, job_id: str, name: str) -> bool:
        """True while some live worker holds the lease (it has not lapsed)."""
        return bool(self.redis.exists(redis_keys.lease(job_id, name)))

    def elect(self, key: str, owner: str, ttl_s: int) -> bool:
        """Hold a cluster-wide lease at key (e.g. the watchdog's sweeper): True if owner has it,
        taken now or renewed; another owner gets it only once owner stops renewing."""
        if self.redis.set(key, owner, nx=True, ex=ttl_s):
            return True
        return bool(self._renew(keys=[key], args=[owner, ttl_s]))

    def mark_requeued(self, job_id: str, name: str, ttl_s: int) -> bool:
        """Note that the work under lease name was put back on the queue; False if it already was."""
        return bool(self.redis.set(redis_keys.requeued(job_id, name), 1, nx=True, ex=ttl_s))

    def clear_requeued(self, job_id: str, name: str) -> None:
        """A worker took the work up: if it dies too, the work may be requeued again."""
        self.redis.delete(redis_keys.requeued(job_id, name))


class LeaseBusy(FacesenseError):
    """Another live worker holds this work; try again after its lease expires."""

    code = "busy"


class LeaseLost(Exception):
    """This worker's lease lapsed (another worker may have taken the work): stop, touch nothing."""


class Lease:
    """A lease on a job (or on a part of it: name), kept alive while the work runs."""

    def __init__(self, leases: Leases, job_id: str, ttl_s: int, name: str):
        self.leases, self.job_id, self.ttl, self.name = leases, job_id, ttl_s, name
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.lost = False
        self._done = threading.Event()

    def __enter__(self) -> Lease:
        if not self.leases.acquire(self.job_id, self.name, self.owner, self.ttl):
            raise LeaseBusy(f"job {self.job_id} ({self.name}) is held by another worker")
        self.leases.clear_requeued(self.job_id, self.name)
        threading.Thread(target=self._beat, daemon=True, name=f"lease-{self.name}").start()
        return self

    def _beat(self) -> None:
        while not self._done.wait(max(0.5, self.ttl / 3)):
            try:
                if not self.leases.renew(self.job_id, self.name, self.owner, self.ttl):
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
                self.leases.release(self.job_id, self.name, self.owner)
            except Exception:  # it lapses by itself after ttl
                log.warning("job %s: releasing lease %s failed", self.job_id, self.name)
