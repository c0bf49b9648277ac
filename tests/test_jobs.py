"""Job records on a real Redis, with final copies in a local store."""

from __future__ import annotations

import json
import time

import pytest
import redis

from facesense.errors import JobNotFound
from facesense.state import redis_keys
from facesense.state.records import JobRecords
from facesense.state.redis_keys import RECENT
from facesense.state.shards import ShardBook
from facesense.state.status import JobStatus, new_job_id
from facesense.storage import LocalStore


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def jobs(r, tmp_path) -> JobRecords:
    return JobRecords(r, LocalStore(tmp_path), ttl_s=600)


@pytest.fixture
def shards(r) -> ShardBook:
    return ShardBook(r, ttl_s=600)


def test_create_then_get_returns_the_queued_record(jobs):
    record = jobs.create("classify", source="s3://b/p", classes=["happy", "sad"])
    assert record["status"] == "queued"
    assert (record["total"], record["done"], record["failed"]) == (0, 0, 0)
    assert record["started_at"] is None and record["error"] is None
    assert jobs.get(record["id"]) == record
    assert jobs.get(record["id"])["classes"] == ["happy", "sad"]
    assert jobs.exists(record["id"])


def test_create_with_a_given_id_and_a_ttl(jobs, r):
    job_id = new_job_id()
    jobs.create("classify", job_id=job_id)
    assert jobs.get(job_id)["id"] == job_id
    assert 0 < r.ttl(redis_keys.job(job_id)) <= 600


def test_job_ids_are_unique_hex_and_time_sortable():
    first = new_job_id()
    time.sleep(0.002)
    second = new_job_id()
    assert first != second and first < second
    assert all(c in "0123456789abcdef" for c in first + second)


def test_update_sets_fields_and_keeps_the_others(jobs):
    job_id = jobs.create("classify", source="s3://b/p")["id"]
    jobs.update(job_id, total=12, shards=3, results={"csv": "jobs/x/results.csv"})
    record = jobs.get(job_id)
    assert (record["total"], record["shards"]) == (12, 3)
    assert record["results"] == {"csv": "jobs/x/results.csv"}
    assert record["source"] == "s3://b/p"


def test_set_status_moves_a_live_job_and_stamps_times(jobs):
    job_id = jobs.create("classify")["id"]
    assert jobs.set_status(job_id, JobStatus.RUNNING, model_version="v1")
    record = jobs.get(job_id)
    assert record["status"] == "running" and record["started_at"] is not None
    assert record["model_version"] == "v1"
    assert jobs.set_status(job_id, JobStatus.SUCCEEDED, summary={"n": 1})
    record = jobs.get(job_id)
    assert record["status"] == "succeeded" and record["finished_at"] is not None
    assert record["summary"] == {"n": 1}


@pytest.mark.parametrize("final", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_set_status_refuses_to_move_a_finished_job(jobs, final):
    job_id = jobs.create("classify")["id"]
    assert jobs.set_status(job_id, final, error="first")
    before = jobs.get(job_id)
    for status in JobStatus:
        assert not jobs.set_status(job_id, status, error="late")
    after = jobs.get(job_id)
    assert after == before
    assert after["status"] == final.value and after["error"] == "first"


def test_set_status_of_an_unknown_job_creates_nothing(jobs, r):
    job_id = new_job_id()
    assert not jobs.set_status(job_id, JobStatus.RUNNING)
    assert not r.exists(redis_keys.job(job_id))


def test_a_final_status_leaves_the_active_index_and_counts_one_end(jobs, r):
    job_id = jobs.create("train")["id"]
    assert job_id in jobs.active()
    before = int(r.hget(redis_keys.FINISHED_COUNTS, "train:failed") or 0)
    assert jobs.set_status(job_id, JobStatus.RUNNING) and job_id in jobs.active()
    assert jobs.set_status(job_id, JobStatus.FAILED, error="boom")
    assert not jobs.set_status(job_id, JobStatus.CANCELLED)  # already final: no second end
    assert job_id not in jobs.active()
    assert int(r.hget(redis_keys.FINISHED_COUNTS, "train:failed")) == before + 1
    assert jobs.get(job_id)["error"] == "boom" and jobs.get(job_id)["finished_at"]


def test_finished_flag_of_each_status():
    assert [s.value for s in JobStatus if s.finished] == ["succeeded", "failed", "cancelled"]
    assert JobStatus("queued") is JobStatus.QUEUED and JobStatus.QUEUED == "queued"


# --- shards -------------------------------------------------------------------------------


def test_count_shard_counts_a_shard_only_once(jobs, shards):
    job_id = jobs.create("classify", total=10, shards=3)["id"]
    assert shards.count(job_id, 0, done=5, failed=1) == (True, 1)
    assert shards.count(job_id, 0, done=5, failed=1) == (False, 1)  # redelivered
    record = jobs.get(job_id)
    assert (record["done"], record["failed"], record["shards_done"]) == (5, 1, 1)
    assert shards.count(job_id, 2, done=4, failed=0) == (True, 2)
    record = jobs.get(job_id)
    assert (record["done"], record["failed"], record["shards_done"]) == (9, 1, 2)


def test_uncounted_shards_lists_the_shards_not_yet_counted(jobs, shards):
    job_id = jobs.create("classify", shards=20)["id"]
    assert shards.uncounted(job_id, 20) == list(range(20))
    for index in (0, 7, 8, 9, 17):
        shards.count(job_id, index, done=1, failed=0)
    assert shards.uncounted(job_id, 20) == [i for i in range(20)
                                                 if i not in (0, 7, 8, 9, 17)]
    assert shards.uncounted(job_id, 3) == [1, 2]


def test_shard_bitmap_expires_with_the_job(jobs, shards, r):
    job_id = jobs.create("classify")["id"]
    shards.count(job_id, 4, done=1, failed=0)
    assert 0 < r.ttl(redis_keys.shard_bits(job_id)) <= 600


def test_attempts_count_up_and_back_and_expire_with_the_job(jobs, shards, r):
    job_id = jobs.create("classify", shards=2)["id"]
    assert shards.count_attempt(job_id, 1) == 1
    assert shards.count_attempt(job_id, 1) == 2
    assert shards.count_attempt(job_id, 1, -1) == 1  # a clean failure is taken back
    assert shards.attempts(job_id) == {1: 1}
    assert 0 < r.ttl(redis_keys.attempts(job_id)) <= 600


def test_a_shard_counted_at_its_first_delivery_leaves_no_note(jobs, shards):
    # so a job's Redis bytes do not grow with its shards; a redelivered shard keeps its note
    job_id = jobs.create("classify", shards=3)["id"]
    for index in range(3):
        shards.count_attempt(job_id, index)
    shards.count_attempt(job_id, 2)  # shard 2 was delivered twice
    for index in range(3):
        shards.count(job_id, index, done=1, failed=0)
    assert shards.attempts(job_id) == {2: 2}


def test_the_image_in_flight_when_a_worker_died_becomes_poison_once(jobs, shards):
    job_id = jobs.create("classify", shards=1)["id"]
    assert shards.convict_in_flight(job_id, 0) == set()  # nobody died scoring alone
    shards.note_in_flight(job_id, 0, 3)  # the worker dies here: nothing clears the note
    assert shards.convict_in_flight(job_id, 0) == {3}
    assert shards.convict_in_flight(job_id, 0) == {3}  # the note was consumed, not re-added
    shards.note_in_flight(job_id, 0, 5)
    shards.note_in_flight(job_id, 0, None)  # scored fine: not poison
    assert shards.convict_in_flight(job_id, 0) == {3}


# --- listing, archive, lookup -------------------------------------------------------------


def test_recent_lists_newest_first(jobs):
    ids = []
    for _ in range(3):
        ids.append(jobs.create("classify")["id"])
        time.sleep(0.005)  # created_at has millisecond resolution
    listed = [j["id"] for j in jobs.recent(limit=200) if j["id"] in ids]
    assert listed == ids[::-1]
    assert jobs.recent(limit=1)[0]["id"] == ids[-1]
    assert jobs.recent(limit=1, offset=1)[0]["id"] == ids[-2]


def test_recent_drops_jobs_whose_records_expired(jobs, r):
    job_id = jobs.create("classify")["id"]
    r.delete(redis_keys.job(job_id))
    assert job_id not in [j["id"] for j in jobs.recent(limit=200)]
    assert r.zscore(RECENT, job_id) is None


def test_job_indexes_are_trimmed_of_ids_older_than_the_record_ttl(jobs, r):
    stale = new_job_id()
    r.zadd(RECENT, {stale: time.time() - 601})  # older than the records' 600 s TTL
    r.zadd(redis_keys.owned("alice"), {stale: time.time() - 601})
    fresh = jobs.create("classify", owner="alice")["id"]
    assert r.zscore(RECENT, stale) is None and r.zscore(RECENT, fresh) is not None
    assert [j["id"] for j in jobs.recent(owner="alice")] == [fresh]
    assert 0 < r.ttl(redis_keys.owned("alice")) <= 600


def test_archive_writes_job_json_and_get_falls_back_to_it(jobs, r, tmp_path):
    job_id = jobs.create("classify", source="s3://b/p")["id"]
    jobs.set_status(job_id, JobStatus.SUCCEEDED)
    archived = jobs.archive(job_id)
    on_disk = json.loads((tmp_path / "jobs" / job_id / "job.json").read_text())
    assert on_disk == archived == jobs.get(job_id)
    r.delete(redis_keys.job(job_id))
    assert not jobs.exists(job_id)
    record = jobs.get(job_id)
    assert record["status"] == "succeeded" and record["source"] == "s3://b/p"


@pytest.mark.parametrize("job_id", ["0123456789abcdef0123", "../x", "a/b", "..", "",
                                    "ZZZ", "x" * 100, "jobs/../../etc/passwd"])
def test_get_of_an_unknown_or_odd_id_raises_job_not_found(jobs, job_id):
    with pytest.raises(JobNotFound):
        jobs.get(job_id)
    assert not jobs.exists(job_id)


def test_get_with_a_corrupt_archive_raises_job_not_found(jobs, tmp_path):
    job_id = new_job_id()
    jobs.store.put(f"jobs/{job_id}/job.json", b"{not json")
    with pytest.raises(JobNotFound):
        jobs.get(job_id)
