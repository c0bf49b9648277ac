"""Deleting finished jobs: every store object and Redis key a job wrote, and its index entries;
and the retention sweep that deletes the ones older than FACESENSE_JOB_RETENTION_DAYS."""

from __future__ import annotations

import json
import logging
import time

from facesense.errors import Conflict, JobNotFound
from facesense.state import joblist, leases, redis_keys
from facesense.state.records import JobRecords
from facesense.state.status import FINISHED, JobStatus, valid_id
from facesense.storage import layout

log = logging.getLogger(__name__)
CHUNK = 500  # keys per UNLINK: a job with 10,000 shards never blocks Redis in one call
DELETING = "deleting_at"  # set first: a delete cut short is finished by the next one


def job_keys(record: dict) -> list[str]:
    """Every Redis key of one job (redis_keys names them), its per-shard ones included."""
    job_id = record["id"]
    names = [leases.TRAINING, leases.PLAN, leases.FINALIZE,
             *(leases.shard(i) for i in range(record.get("shards") or 0))]
    keys = [redis_keys.shard_bits(job_id), redis_keys.attempts(job_id),
            redis_keys.in_flight(job_id), redis_keys.sched(job_id),
            redis_keys.sched_retry(job_id), redis_keys.sched_picked(job_id)]
    keys += [redis_keys.lease(job_id, n) for n in names]
    keys += [redis_keys.requeued(job_id, n) for n in names]
    keys += [redis_keys.poison(job_id, i) for i in range(record.get("shards") or 0)]
    return [*keys, redis_keys.job(job_id)]  # the record last: while it lives, a retry finds it


class Purger:
    """Deletes finished jobs, one at a time, touching nothing of another job."""

    def __init__(self, jobs: JobRecords, settle_s: float = 120):
        self.jobs, self.redis, self.store = jobs, jobs.redis, jobs.store
        self.settle_s = settle_s  # how long a cancelled scoring job's workers may still write

    def check(self, record: dict) -> None:
        """Conflict unless the job finished (a cancelled scoring job: its partial results
        merged, or settle_s gone by) and no live job reads its inputs (a retry does)."""
        if record["status"] not in FINISHED:
            raise Conflict(f"job {record['id']} is {record['status']}: cancel it first, then "
                           "delete it once it has stopped")
        ago = time.time() - (record.get("finished_at") or 0)
        if (record["status"] == JobStatus.CANCELLED and record.get("type") == "classify"
                and "partial" not in record and ago < self.settle_s):
            raise Conflict(f"job {record['id']} was cancelled {ago:.0f} s ago and a worker is "
                           "still merging its partial results: delete it in a moment")
        active = self.jobs.active()
        with self.redis.pipeline(transaction=False) as pipe:
            for other in active:
                pipe.hget(redis_keys.job(other), "retry_of")
            of = pipe.execute()
        for other, raw in zip(active, of, strict=True):
            if raw and json.loads(raw) == record["id"]:
                raise Conflict(f"job {other} (a retry of {record['id']}) reads its inputs and "
                               "has not finished: delete this one once it has")

    def delete(self, record: dict) -> dict:
        """Remove a finished job everywhere; returns {id, objects, keys} removed. A delete cut
        short leaves the record (marked), so a repeat finishes it."""
        job_id = record["id"]
        self.check(record)
        if self.jobs.exists(job_id):
            self.jobs.update(job_id, **{DELETING: time.time()})
        objects = 0
        for key in list(self.store.list(f"{layout.JOBS}/{job_id}")):
            if key != layout.job_record(job_id):
                self.store.delete(key)
                objects += 1
        with self.redis.pipeline(transaction=False) as pipe:
            for index in joblist.indexes(record):
                pipe.zrem(index, job_id)
            pipe.srem(redis_keys.ACTIVE, job_id)
            for ring in redis_keys.SCHED_RINGS:
                pipe.lrem(ring, 0, job_id)
            pipe.zrem(redis_keys.TRAINING_SHARED, job_id)
            pipe.execute()
        keys = job_keys(record)
        removed = sum(self.redis.unlink(*keys[i:i + CHUNK]) for i in range(0, len(keys), CHUNK))
        if self.store.exists(layout.job_record(job_id)):  # last: the history goes with it
            self.store.delete(layout.job_record(job_id))
            objects += 1
        log.info("job %s deleted: %d store objects, %d Redis keys", job_id, objects, removed)
        return {"id": job_id, "deleted": True, "objects": objects, "keys": removed}

    def expired(self, cutoff: float, most: int) -> list[dict]:
        """Up to `most` finished jobs created and finished before cutoff, oldest first: from
        the index (jobs Redis holds) and the store's jobs/ folder (ids sort by creation time,
        so the listing stops at the first younger one)."""
        ids = [i.decode() for i in self.redis.zrangebyscore(redis_keys.RECENT, "-inf", cutoff,
                                                             start=0, num=most)]
        for job_id in self.store.folders(layout.JOBS):
            if len(ids) >= 4 * most or not valid_id(job_id) or _created(job_id) >= cutoff:
                break
            ids.append(job_id)
        out, seen = [], set()
        for job_id in ids:
            if job_id in seen or len(out) >= most:
                continue
            seen.add(job_id)
            try:
                record = self.jobs.get(job_id)
            except JobNotFound:  # files with no record (a submission that never got one), or
                # an empty folder a store keeps after a delete (SeaweedFS does): nothing to do
                if next(iter(self.store.list(f"{layout.JOBS}/{job_id}")), None) is None:
                    continue
                record = {"id": job_id, "status": JobStatus.FAILED.value, "created_at": _created(job_id)}
            ended = record.get("finished_at") or record.get("created_at") or 0
            if record["status"] in FINISHED and ended < cutoff:
                out.append(record)
        return out

    def sweep(self, days: float, most: int) -> list[str]:
        """Delete up to `most` finished jobs older than `days`; returns their ids."""
        deleted = []
        for record in self.expired(time.time() - days * 86400, most):
            try:
                self.delete(record)
                deleted.append(record["id"])
            except Conflict as e:  # a live retry still reads it: next sweep
                log.info("retention: kept %s for now: %s", record["id"], e)
        return deleted


def _created(job_id: str) -> float:
    """A job's creation time from its id (its first 12 hex digits are Unix milliseconds)."""
    return int(job_id[:12], 16) / 1000


def jobs_naming(jobs: JobRecords, version: str) -> list[str]:
    """Ids of the queued and running jobs that score with, or fine-tune from, a version."""
    out = []
    for job_id in jobs.active():
        try:
            record = jobs.get(job_id)
        except JobNotFound:
            continue
        base = (record.get("params") or {}).get("base")
        if record["status"] not in FINISHED and version in (
                record.get("model_version"), record.get("model"), base):
            out.append(job_id)
    return out
