"""A private stack for tests that kill things: its own redis-server, store, API and workers.

Shards are small and the model's input is 64 px, so thousands of images take seconds; leases
are short so a dead worker is noticed fast.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from cli.launcher import start_workers, stop
from facesense import redisconn
from facesense.outputs.jsonl import iter_jsonl
from facesense.queue import INFERENCE_QUEUE
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.state import leases, redis_keys
from facesense.storage import store_from_settings
from facesense.storage.layout import job_key
from tests.conftest import messages_for, wait_for_workers

FAST = {"shard_size": 50, "batch_size": 25, "decode_threads": 2, "lease_ttl_s": 2,
        "shard_max_attempts": 2, "task_max_retries": 4,
        # webhooks (signed) may reach test receivers on 127.0.0.1
        "webhook_secret": "stack-secret", "url_allow_networks": "127.0.0.1/32"}
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
        self.redis = redisconn.connect(settings)  # a URL's server, or the sentinels' primary
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

    def submit(self, folder: Path, priority: str = "normal") -> str:
        resp = self.api.post("/v1/jobs", json={"type": "classify", "source": str(folder),
                                               "priority": priority})
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
            owner = (self.redis.get(key) or b"").decode().split(":")  # host:pid:...
            if len(owner) > 1 and owner[1] in pids:  # (a lease released meanwhile reads empty)
                return int(key.decode().split(":")[-2])
        return None

    def kill_holding(self, job_id: str, worker: subprocess.Popen, done: int) -> int:
        """SIGKILL the worker once the job has `done` images counted and the worker holds one of
        its shards; returns that shard's index."""
        index = wait_until(lambda: self.job(job_id)["progress"]["done"] >= done
                           and self.shard_held_by(job_id, worker), 120, "the worker to hold a shard")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        return index

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


def assert_each_image_once(rows: list[dict], keys: list[str], errors: int = 0) -> None:
    images = [r["image"] for r in rows]
    assert len(images) == len(set(images)) and sorted(images) == sorted(keys)
    assert sum(1 for r in rows if r["error"]) == errors  # no image lost to a fault as an error


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
