"""Fault tolerance with real processes: killed and stopped workers, a restarted Redis, a poison
shard, cancel with partial results, an object store outage.

These tests run on a private stack (their own redis-server, store and workers), so killing
things never disturbs the session's shared servers. Shards are small and the model's input is
64 px, so thousands of images take seconds; leases are short so a dead worker is noticed fast.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from PIL import Image

from cli.launcher import start_redis, start_workers, stop
from facesense.outputs.jsonl import iter_jsonl
from facesense.queue import INFERENCE_QUEUE
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.state import leases, redis_keys
from facesense.storage import store_from_settings
from facesense.storage.layout import job_key
from tests.conftest import messages_for, wait_for_workers
from tests.servers import TcpProxy, s3_client, start_seaweed

pytestmark = pytest.mark.slow

FAST = {"shard_size": 50, "batch_size": 25, "decode_threads": 2, "lease_ttl_s": 2,
        "shard_max_attempts": 2, "task_max_retries": 4}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two workers share two cores


def tiny_folder(root: Path, n: int, groups=("ad_a", "ad_b", "ad_c", "ad_d")) -> list[str]:
    """n small JPEGs over group sub-folders; returns their keys (relative paths)."""
    blobs = []
    for i in range(16):
        buf = io.BytesIO()
        Image.new("RGB", (40, 40), (i * 15, 255 - i * 15, (i * 70) % 256)).save(buf, "JPEG")
        blobs.append(buf.getvalue())
    keys = []
    for i in range(n):
        key = f"{groups[i % len(groups)]}/img{i:05d}.jpg"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(blobs[i % len(blobs)])
        keys.append(key)
    return keys


def register_small_model(settings: Settings) -> None:
    """A random 2-class AlexNet with a 64 px input, promoted to production."""
    import torch

    from runtime.network import build_alexnet, register_state

    torch.manual_seed(0)
    registry = Registry(store_from_settings(settings))
    manifest = register_state(registry, build_alexnet(2).state_dict(), ["happy", "sad"],
                              source="tests: faults",
                              preprocess={"input_size": 64, "resize_size": 64,
                                          "mean": [0.485, 0.456, 0.406],
                                          "std": [0.229, 0.224, 0.225]})
    registry.promote(manifest["version"], "production", by="tests")


class Stack:
    """A private Redis, a store, an in-process API and the worker processes a test starts."""

    def __init__(self, root: Path, settings: Settings, redis_proc: subprocess.Popen):
        from api import create_app

        self.root, self.settings, self.redis_proc = root, settings, redis_proc
        self.api = create_app(settings).test_client()
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.workers: list[subprocess.Popen] = []

    def start_workers(self, n: int, pool: str = "solo", env: dict | None = None, stderr=None):
        procs = start_workers(self.settings, n, env={**ONE_THREAD, **(env or {})},
                              queues="inference", pool=pool, first=len(self.workers),
                              stderr=stderr)
        self.workers += procs
        wait_for_workers(self.settings, procs, len(self.alive()))
        return procs

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.workers if p.poll() is None]

    def ensure_workers(self, n: int) -> list[subprocess.Popen]:
        """n live workers, starting poisonable prefork ones if fewer are alive (startup is slow,
        so tests share workers: the poison plugin only kills on the poison file)."""
        if len(self.alive()) < n:
            self.start_workers(n - len(self.alive()), pool="prefork", env=self.poison_env())
        return self.alive()

    def poison_env(self) -> dict:
        """PYTHONPATH with a sitecustomize that makes the poison file kill its process."""
        plugin = self.root / "plugin"
        plugin.mkdir(exist_ok=True)
        (plugin / "sitecustomize.py").write_text(POISON_PLUGIN)
        return {"PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])}

    def stop_workers(self) -> None:
        stop(self.workers, timeout=15)
        self.workers = []

    def submit(self, folder: Path) -> str:
        resp = self.api.post("/v1/jobs", json={"type": "classify", "source": str(folder)})
        assert resp.status_code == 202, resp.get_json()
        return resp.get_json()["id"]

    def settled(self, job_id: str) -> bool:
        """True once every task queued for the job has been delivered and has returned."""
        return messages_for(self.redis, job_id, INFERENCE_QUEUE) == 0

    def job(self, job_id: str) -> dict:
        return self.api.get(f"/v1/jobs/{job_id}").get_json()

    def wait(self, job_id: str, timeout: float = 120, statuses=("succeeded", "failed", "cancelled")):
        return wait_until(lambda: (r := self.job(job_id))["status"] in statuses and r, timeout,
                          f"job {job_id} to finish")

    def rows(self, job_id: str) -> list[dict]:
        with store_from_settings(self.settings).open(job_key(job_id, "results.jsonl")) as f:
            return list(iter_jsonl(f))

    def shard_held_by(self, job_id: str, worker: subprocess.Popen) -> int | None:
        """The index of a shard of this job whose lease the worker (or its pool child) holds."""
        pids = {str(worker.pid), *children(worker.pid)}
        for key in self.redis.scan_iter(redis_keys.lease(job_id, leases.shard("*"))):
            if (self.redis.get(key) or b"").decode().split(":")[1] in pids:
                return int(key.decode().split(":")[-2])
        return None

    def attempts(self, job_id: str) -> dict[int, int]:
        raw = self.redis.hgetall(redis_keys.attempts(job_id))
        return {int(k): int(v) for k, v in raw.items()}


def children(pid: int) -> list[str]:
    """The pids of a process's children (a prefork worker's pool processes)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []


def wait_until(check, timeout: float, what: str):
    """check()'s first truthy value, polling; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    redis_proc, url = start_redis(root / "redis")
    settings = Settings(redis_url=url, store=str(root / "store"), allowed_roots=(str(root),),
                        data_dir=str(root / "var"), **FAST)
    register_small_model(settings)
    s = Stack(root, settings, redis_proc)
    yield s
    s.stop_workers()
    stop([s.redis_proc])


def assert_each_image_once(rows: list[dict], keys: list[str], errors: int = 0) -> None:
    images = [r["image"] for r in rows]
    assert len(images) == len(set(images)) and sorted(images) == sorted(keys)
    assert sum(1 for r in rows if r["error"]) == errors  # no image lost to a fault as an error


def test_sigkill_one_of_two_workers_mid_job(stack):
    keys = tiny_folder(stack.root / "kill", 2000)
    (a,) = stack.start_workers(1)  # the victim: a solo worker, one process
    (b,) = stack.ensure_workers(2)[-1:]
    job_id = stack.submit(stack.root / "kill")
    # Kill worker a while it holds a shard, once the job is well under way.
    index = wait_until(lambda: stack.job(job_id)["progress"]["done"] >= 200
                       and stack.shard_held_by(job_id, a), 120, "worker a to hold a shard")
    a.send_signal(signal.SIGKILL)
    a.wait()
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
    assert stack.attempts(job_id)[index] == 1


def test_redis_restart_with_queued_and_running_jobs(stack):
    folders = []
    for i in range(6):
        folders.append((stack.root / f"restart{i}", tiny_folder(stack.root / f"restart{i}", 150)))
    stack.ensure_workers(1)
    ids = [stack.submit(folder) for folder, _ in folders]
    wait_until(lambda: stack.job(ids[0])["status"] == "running", 60, "the first job to run")
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


POISON_PLUGIN = '''
import os, signal
from PIL import PngImagePlugin

_open = PngImagePlugin.PngImageFile._open

def _poisoned_open(self):
    # Like a segfault in a native codec: this input kills whichever process decodes it.
    if b"POISON" in self.fp.read(32):
        os.kill(os.getpid(), signal.SIGKILL)
    self.fp.seek(0)
    _open(self)

PngImagePlugin.PngImageFile._open = _poisoned_open
'''


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
    assert stack.attempts(job_id) == {0: 1, 1: 4, 2: 1}


def test_cancel_keeps_partial_results(stack):
    keys = tiny_folder(stack.root / "cancel", 1500)
    stack.ensure_workers(1)
    job_id = stack.submit(stack.root / "cancel")
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
    keys = tiny_folder(root / "images", 600)
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
