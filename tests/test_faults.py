"""Fault tolerance with real processes: killed and stopped workers, a restarted Redis, a poison
shard, cancel with partial results, an object store outage.

These tests run on the private stack (tests.stack: its own redis-server, store and workers),
so killing things never disturbs the session's shared servers.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from cli.launcher import start_redis, stop
from facesense.state import redis_keys
from tests.loopback import Loopback
from tests.servers import TcpProxy, s3_client, start_seaweed
from tests.stack import Stack, assert_each_image_once, register_small_model, tiny_folder, wait_until

pytestmark = pytest.mark.slow


def test_sigkill_one_of_two_workers_mid_job(stack):
    keys = tiny_folder(stack.root / "kill", 2000)
    (a,) = stack.start_workers(1)  # the victim: a solo worker, one process
    (b,) = [w for w in stack.ensure_workers(2) if w is not a][-1:]  # a worker alive already counts
    job_id = stack.submit(stack.root / "kill")
    # Kill worker a while it holds a shard, once the job is well under way.
    index = stack.kill_holding(job_id, a, done=200)
    record = stack.wait(job_id, 180)
    assert record["status"] == "succeeded", record
    assert record["progress"]["done"] == 2000 and record["progress"]["failed"] == 0
    assert_each_image_once(stack.rows(job_id), keys)
    # The dead worker's shard came back through the watchdog (lease lapsed), not after the
    # broker's one-hour visibility timeout: delivered twice, counted once.
    assert stack.attempts(job_id)[index] == 2
    assert b.poll() is None


def test_sigterm_mid_shard_finishes_the_shard(stack):
    keys = tiny_folder(stack.root / "term", 600)
    *others, w = stack.ensure_workers(1)
    stop(others)  # only w works on this job
    job_id = stack.submit(stack.root / "term")
    index = wait_until(lambda: stack.shard_held_by(job_id, w), 60, "a shard")
    w.send_signal(signal.SIGTERM)
    assert w.wait(60) == 0  # warm shutdown: the running task completes first
    # The shard it held was finished and counted before the worker left.
    assert stack.redis.getbit(redis_keys.shard_bits(job_id), index) == 1
    stack.ensure_workers(1)  # the rest of the job waits in the queue for the next worker
    record = stack.wait(job_id, 120)
    assert record["status"] == "succeeded" and record["progress"]["done"] == 600
    assert_each_image_once(stack.rows(job_id), keys)
    assert index not in stack.attempts(job_id)  # counted at its first delivery: no note kept


def test_redis_restart_with_queued_and_running_jobs(stack):
    folders = []
    for i in range(6):  # the normal jobs' 5 shards each keep the low jobs queued a while
        folders.append((stack.root / f"restart{i}",
                        tiny_folder(stack.root / f"restart{i}", 300 if i < 2 else 150)))
    stack.ensure_workers(1)
    ids = [stack.submit(folder, "normal") for folder, _ in folders[:2]]
    wait_until(lambda: stack.job(ids[0])["status"] == "running", 60, "the first job to run")
    # low priority, queued once the normal jobs' shards wait: they wait while anything else does
    # (submitted together, a low job could take a turn while a normal job was still listing)
    ids += [stack.submit(folder, "low") for folder, _ in folders[2:]]
    workers = stack.alive()
    assert [stack.job(i)["status"] for i in ids[2:]] == ["queued"] * 4
    port = int(stack.settings.redis_url.rsplit(":", 1)[1].split("/")[0])
    stop([stack.redis_proc])  # SIGTERM: Redis writes its append-only file and exits
    time.sleep(2)
    stack.redis_proc, _ = start_redis(stack.root / "redis", port=port)
    for job_id, (_, keys) in zip(ids, folders, strict=True):
        record = stack.wait(job_id, 180)  # the same API client: it reconnects by itself
        assert record["status"] == "succeeded", record
        assert_each_image_once(stack.rows(job_id), keys)
    assert stack.alive() == workers  # the workers reconnected by themselves, none crashed




def test_poison_input_fails_alone_after_k_deaths_on_its_shard(stack):
    folder = stack.root / "poison"
    keys = tiny_folder(folder, 100, groups=("ad_a",))
    poison = b"\x89PNG\r\n\x1a\n" + b"POISON" + bytes(100)  # a PNG header, then the poison
    (folder / "ad_a" / "img00060.png").write_bytes(poison)  # in shard 1
    keys.append("ad_a/img00060.png")
    # Prefork workers with one child: the pool replaces a child that dies, as a supervisor would.
    stack.ensure_workers(1)
    job_id = stack.submit(folder)
    record = stack.wait(job_id, 120)
    assert record["status"] == "succeeded", record
    rows = stack.rows(job_id)
    assert_each_image_once(rows, keys, errors=1)
    failed = {r["image"]: r["error"] for r in rows if r["error"]}
    assert failed == {"ad_a/img00060.png": "not scored: a worker died while decoding or "
                                           "scoring this image"}
    # K = 2 deaths in batches, a third while scoring shard 1's images one at a time (which
    # names the poison), then a delivery that fails only that image and scores the other 49
    assert stack.attempts(job_id) == {1: 4}  # shards 0 and 2 counted at their first delivery


def test_cancel_keeps_partial_results(stack, receiver):
    keys = tiny_folder(stack.root / "cancel", 1500)
    stack.ensure_workers(1)
    resp = stack.api.post("/v1/jobs", json={"type": "classify", "source": str(stack.root / "cancel"),
                                            "callback_url": receiver.url("/cancelled")})
    assert resp.status_code == 202, resp.get_json()
    job_id = resp.get_json()["id"]
    wait_until(lambda: stack.job(job_id)["progress"]["shards_done"] >= 3, 60, "3 shards")
    assert stack.api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    record = wait_until(lambda: (r := stack.job(job_id)).get("partial") and r, 30,
                        "partial results")
    assert record["status"] == "cancelled"
    done = record["progress"]["done"]
    assert 150 <= done < 1500 and done % 50 == 0  # whole shards only
    rows = stack.rows(job_id)
    assert len(rows) == done and len({r["image"] for r in rows}) == done
    assert {r["image"] for r in rows} < set(keys)
    page = stack.api.get(f"/v1/jobs/{job_id}/results?limit=1000").get_json()
    assert page["total"] == done and len(page["rows"]) == min(done, 1000)
    # Every shard still queued at the cancel is delivered and skipped: nothing more is counted.
    wait_until(lambda: stack.settled(job_id), 60, "the queued shards to be delivered")
    assert stack.job(job_id)["progress"]["done"] == done
    # The webhook waited for the merge: its one delivery carries the partial results
    (seen,) = wait_until(lambda: receiver.requests_to("/cancelled"), 30, "the webhook")
    body = json.loads(seen.body)
    assert body["status"] == "cancelled" and body["partial"] is True
    assert body["progress"]["done"] == body["summary"]["overall"]["images"] == done
    assert body["results"] == record["results"]


@pytest.fixture
def receiver():
    """A loopback webhook receiver (the stack's settings allow 127.0.0.1)."""
    with Loopback() as srv:
        yield srv


def test_object_store_outage(tmp_path_factory, stack):
    """The S3 endpoint goes away mid-job and comes back: retried with backoff, the job
    completes; it stays away: the job fails with a clear reason and is not left running."""
    root = tmp_path_factory.mktemp("outage")
    weed, direct = start_seaweed(root / "weed")
    s3_client(direct).create_bucket(Bucket="outage")
    proxy = TcpProxy(int(direct.rsplit(":", 1)[1])).up()
    # Backoff 1 + 2 + 4 s between tries; boto itself tries once (AWS_MAX_ATTEMPTS).
    settings = stack.settings.replace(store="s3://outage/store", s3_endpoint_url=proxy.endpoint,
                                      allowed_roots=(str(root),), task_max_retries=3)
    register_small_model(settings)
    stack.stop_workers()  # the other tests' workers use the local store
    outage = Stack(root, settings, stack.redis_proc)
    keys = tiny_folder(root / "images", 300)  # 6 shards: some done before, some after the outage
    log_path = root / "outage-worker.log"
    with log_path.open("wb") as log:
        outage.start_workers(1, env={"AWS_MAX_ATTEMPTS": "1"}, stderr=log)
    try:
        job_id = outage.submit(root / "images")
        wait_until(lambda: outage.job(job_id)["progress"]["shards_done"] >= 1, 60, "a shard")
        proxy.down()
        # The worker meets the outage and schedules a retry: the job is still running.
        wait_until(lambda: "retry in" in log_path.read_text(errors="replace"), 30, "a retry")
        assert outage.job(job_id)["status"] == "running"
        proxy.up()
        record = outage.wait(job_id, 60)
        assert record["status"] == "succeeded", record
        assert_each_image_once(outage.rows(job_id), keys)

        job_id = outage.submit(root / "images")
        wait_until(lambda: outage.job(job_id)["progress"]["shards_done"] >= 1, 60, "a shard")
        proxy.down()
        record = outage.wait(job_id, 60)
        assert record["status"] == "failed"
        assert "gave up after 3 retries" in record["error"]
        assert "Could not connect to the endpoint URL" in record["error"]
    finally:
        proxy.down()
        outage.stop_workers()
        stop([weed], timeout=2)
