"""Deleting jobs and model versions, and the retention rule: every object and key of the job
(or version) goes, nothing of another one is touched; on a local folder and on real S3."""

from __future__ import annotations

import io
import re
import time
import uuid

import pytest
import redis
from PIL import Image

from api import create_app
from facesense.keys import hash_key, new_key
from facesense.registry import Registry
from facesense.state import leases, redis_keys
from facesense.state.purge import Purger
from facesense.state.records import JobRecords
from facesense.state.status import JobStatus
from facesense.storage import layout, store_from_settings
from tests.conftest import BUCKET, wait_for_job
from worker.context import build_context
from worker.watchdog import Watchdog, retain

ALICE, BOB, OPS = new_key(), new_key(), new_key()


def bearer(key: str) -> dict:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(params=["local", "s3"])
def own(request, settings, redis_url, tmp_path, unique):
    """Settings on a store and a Redis database of this test's own (local folder or S3 prefix),
    with keys for alice, bob and ops (admin): listings and sweeps see only this test's jobs."""
    store = str(tmp_path / "store") if request.param == "local" else f"s3://{BUCKET}/del-{unique}"
    db_url = re.sub(r"/\d+$", "/9", redis_url)
    redis.Redis.from_url(db_url).flushdb()
    yield settings.replace(redis_url=db_url, store=store,
                           api_keys=f"alice:{hash_key(ALICE)},bob:{hash_key(BOB)}",
                           admin_keys=f"ops:{hash_key(OPS)}")
    redis.Redis.from_url(db_url).flushdb()


def records(settings) -> JobRecords:
    """The job records of these settings."""
    return JobRecords(redis.Redis.from_url(settings.redis_url), store_from_settings(settings))


def finished_job(settings, owner: str = "alice", shards: int = 3, age_days: float = 0,
                 status: JobStatus = JobStatus.SUCCEEDED, **fields) -> str:
    """A finished job with an object under every key layout names for a job and a Redis key
    of every per-job kind redis_keys names (written directly, as the workers would)."""
    jobs = records(settings)
    then = time.time() - age_days * 86400  # ids begin with their creation time, as real ones
    job_id = jobs.create("classify", f"{int(then * 1000):012x}{uuid.uuid4().hex[:12]}",
                         source="tests", model_version="v", owner=owner, **fields)["id"]
    keys = [layout.url_list(job_id), layout.manifest(job_id), layout.job_key(job_id, layout.RETRY_KEYS),
            layout.job_key(job_id, "inputs/variant_a/1.jpg"), layout.checkpoint_key(job_id),
            layout.thumb_key(job_id, "ab12.jpg"), layout.job_key(job_id, layout.RESULTS_INDEX),
            *(layout.job_key(job_id, f) for f in layout.RESULT_FILES),
            *(k for i in range(shards) for k in (layout.plan_key(job_id, i), layout.shard_key(job_id, i)))]
    for key in keys:
        jobs.store.put(key, b"x")
    r = jobs.redis
    r.setbit(redis_keys.shard_bits(job_id), 1, 1)
    r.hset(redis_keys.attempts(job_id), "0", 1)
    r.hset(redis_keys.in_flight(job_id), "1", 4)
    r.sadd(redis_keys.poison(job_id, shards - 1), 3)
    r.set(redis_keys.lease(job_id, leases.shard(0)), "w")
    r.set(redis_keys.requeued(job_id, leases.PLAN), 1)
    r.hset(redis_keys.sched(job_id), "next", 3)
    r.rpush(redis_keys.sched_retry(job_id), 2)
    r.zadd(redis_keys.sched_picked(job_id), {"1": 1.0})
    jobs.update(job_id, shards=shards)
    jobs.set_status(job_id, status)
    if age_days:  # as if it were created and finished that long ago
        jobs.update(job_id, created_at=then, finished_at=then)
        for index in (redis_keys.RECENT, redis_keys.owned(owner)):
            r.zadd(index, {job_id: then})
    jobs.archive(job_id)
    return job_id


def leftovers(settings, job_id: str) -> tuple[list[str], list[bytes]]:
    """The store objects and Redis keys a job still has."""
    jobs = records(settings)
    return (list(jobs.store.list(f"{layout.JOBS}/{job_id}")),
            sorted(jobs.redis.scan_iter(match=f"{redis_keys.job(job_id)}*")))


def test_deleting_a_finished_job_removes_all_of_it_and_nothing_of_another(own):
    # Given two finished jobs of alice's, each with every kind of object and key
    gone, kept = finished_job(own, tags=["spring"]), finished_job(own, tags=["spring"])
    before = leftovers(own, kept)
    assert len(before[0]) > 10 and len(before[1]) == 10
    api = create_app(own).test_client()

    # When alice deletes one
    resp = api.delete(f"/v1/jobs/{gone}", headers=bearer(ALICE))

    # Then none of its objects or keys remain, nor its place in any index
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["deleted"] and resp.get_json()["objects"] == len(before[0])
    assert leftovers(own, gone) == ([], [])
    assert api.get(f"/v1/jobs/{gone}", headers=bearer(ALICE)).status_code == 404
    r = redis.Redis.from_url(own.redis_url)
    for index in (redis_keys.RECENT, redis_keys.owned("alice"), redis_keys.tagged("spring"),
                  redis_keys.tagged("spring", "alice")):
        assert r.zscore(index, gone) is None and r.zscore(index, kept) is not None
    # and the other job is whole
    assert leftovers(own, kept) == before
    listed = api.get("/v1/jobs?tag=spring", headers=bearer(ALICE)).get_json()["jobs"]
    assert [j["id"] for j in listed] == [kept]
    assert api.delete(f"/v1/jobs/{gone}", headers=bearer(ALICE)).status_code == 404


def test_a_job_is_deleted_only_by_a_key_that_sees_it(own):
    job_id = finished_job(own, owner="alice")
    api = create_app(own).test_client()
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 401
    assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(BOB)).status_code == 404  # as unknown
    assert leftovers(own, job_id)[0]
    assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(OPS)).status_code == 200  # an admin


def test_a_running_job_is_refused_until_cancelled(own, base_dir, unique):
    folder = base_dir / f"del-{unique}"
    folder.mkdir()
    registry = Registry(store_from_settings(own))
    registry.promote(registry.register(b"w", {"classes": ["happy", "sad"]})["version"])
    api = create_app(own).test_client()
    job_id = api.post("/v1/jobs", json={"type": "classify", "source": str(folder)},
                      headers=bearer(ALICE)).get_json()["id"]  # no worker on this database
    resp = api.delete(f"/v1/jobs/{job_id}", headers=bearer(ALICE))
    assert resp.status_code == 409 and "cancel it first" in resp.get_json()["error"]["message"]
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(ALICE)).status_code == 200
    # a cancelled job's workers may still be merging its partial results: kept a little
    resp = api.delete(f"/v1/jobs/{job_id}", headers=bearer(ALICE))
    assert resp.status_code == 409 and "partial results" in resp.get_json()["error"]["message"]
    records(own).update(job_id, partial=True)  # as the finaliser marks a merged cancelled job
    assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(ALICE)).status_code == 200
    assert leftovers(own, job_id) == ([], [])


def test_a_job_a_live_retry_reads_is_kept_until_the_retry_ends(own):
    first = finished_job(own)
    retry = records(own).create("classify", source=f"upload:{layout.inputs(first)}",
                                retry_of=first, owner="alice")["id"]
    api = create_app(own).test_client()
    resp = api.delete(f"/v1/jobs/{first}", headers=bearer(ALICE))
    assert resp.status_code == 409 and retry in resp.get_json()["error"]["message"]
    records(own).set_status(retry, JobStatus.CANCELLED)
    assert api.delete(f"/v1/jobs/{first}", headers=bearer(ALICE)).status_code == 200


def test_retention_deletes_old_finished_jobs_a_bounded_number_per_sweep(own):
    # Given three finished jobs 10 days old, one running job as old, and a fresh finished one
    old = [finished_job(own, age_days=10) for _ in range(3)]
    fresh = finished_job(own)
    running = records(own).create("classify", source="tests", owner="alice")["id"]
    records(own).update(running, created_at=time.time() - 10 * 86400)
    settings = own.replace(job_retention_days=7, job_retention_batch=2)
    dog = Watchdog(build_context(settings, lambda *a: None))

    # When the elected watchdog's retention rule runs twice
    first, second = retain(dog, every_s=0), retain(dog, every_s=0)

    # Then two go on the first run and the third on the next; the others stay whole
    assert len(first) == 2 and second == [j for j in old if j not in first]
    for job_id in old:
        assert leftovers(own, job_id) == ([], [])
    assert leftovers(own, fresh)[0] and records(own).get(running)["status"] == "queued"
    assert retain(dog, every_s=0) == []
    assert retain(Watchdog(build_context(own, lambda *a: None)), 0) == []  # off


def test_retention_finds_jobs_only_the_store_still_has(own):
    # Given an old job that Redis forgot long ago (its record archived in the store)
    job_id = finished_job(own, age_days=40)
    jobs = records(own)
    for key in jobs.redis.scan_iter(match="facesense:*"):
        jobs.redis.delete(key)
    assert jobs.get(job_id)["status"] == "succeeded"
    # When the sweep runs with a 30-day rule, then the job's objects are gone
    deleted = Purger(jobs).sweep(30, 10)
    assert job_id in deleted and leftovers(own, job_id) == ([], [])


def test_a_scored_upload_is_deleted_with_its_uploads_results_and_keys(client, worker, settings):
    # Given a real job: two uploaded images scored by the worker on S3
    files = []
    for i in range(2):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (i * 90, 80, 40)).save(buf, "JPEG")
        files.append((io.BytesIO(buf.getvalue()), f"ad/{i}.jpg"))
    job_id = client.post("/v1/jobs", data={"type": "classify", "files": files},
                         content_type="multipart/form-data").get_json()["id"]
    assert wait_for_job(client, job_id)["status"] == "succeeded"
    assert len(leftovers(settings, job_id)[0]) >= 5  # uploads, plan, shard, results, record
    # When it is deleted, then nothing of it is left in the store or in Redis
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
    assert leftovers(settings, job_id) == ([], [])


def test_a_model_version_is_deleted_only_when_nothing_names_it(own, base_dir, unique):
    # Given two versions on this store: one behind an alias, one named by a queued job
    registry = Registry(store_from_settings(own))
    a = registry.register(b"weights-a", {"classes": ["happy", "sad"]}, version=f"a-{unique}")
    b = registry.register(b"weights-b", {"classes": ["happy", "sad"]}, version=f"b-{unique}")
    registry.promote(a["version"], "production", by="tests")
    api = create_app(own).test_client()
    folder = base_dir / f"model-{unique}"
    folder.mkdir()
    job = api.post("/v1/jobs", json={"type": "classify", "source": str(folder),
                                     "model": b["version"]}, headers=bearer(ALICE)).get_json()

    # Then a user key may not delete, and each use is a 409 naming it
    assert api.delete(f"/v1/models/{b['version']}", headers=bearer(ALICE)).status_code == 403
    resp = api.delete(f"/v1/models/{a['version']}", headers=bearer(OPS))
    assert resp.status_code == 409 and "production" in resp.get_json()["error"]["message"]
    resp = api.delete(f"/v1/models/{b['version']}", headers=bearer(OPS))
    assert resp.status_code == 409 and job["id"] in resp.get_json()["error"]["message"]

    # When the job ends, the version goes, files and all, and the other stays whole
    api.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(ALICE))
    resp = api.delete(f"/v1/models/{b['version']}", headers=bearer(OPS))
    assert resp.status_code == 200 and resp.get_json()["objects"] == 2
    assert list(registry.store.list(f"models/{b['version']}")) == []
    assert api.get(f"/v1/models/{b['version']}", headers=bearer(OPS)).status_code == 404
    assert registry.weights(registry.manifest(a["version"])) == b"weights-a"
    assert api.delete("/v1/models/aliases", headers=bearer(OPS)).status_code == 404
