"""Horizontal scale on one machine: 1 vs 2 worker processes on the same job.

`python -m bench.scaling [--n 4000] [--size 640x480]`

Each worker is one process pinned to its own CPU core (one torch thread, one decode thread),
so two workers on two cores is the scale-out a second machine would give. Both runs score the
same folder through the API on a private Redis and a local store, after a one-image warm-up
job per worker (model loaded); the figure is submission-to-`succeeded` wall time. It also
records which worker processes held the job's shard leases, to show both worked on one job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from api import create_app
from bench.photos import make_photos
from cli.launcher import start_redis, stop, worker_command
from facesense.queue import make_celery
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.state import leases, redis_keys
from facesense.storage import store_from_settings

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(workers: int, images: Path, base: Path) -> dict:
    """Score the folder with this many workers; returns images/s and the lease holders seen."""
    redis_proc, url = start_redis(base / f"redis-{workers}")
    settings = Settings.from_env(redis_url=url, store=str(base / "store"),
                                 allowed_roots=(str(base),), decode_threads=1)
    procs = [pinned_worker(settings, core) for core in range(workers)]
    try:
        celery = make_celery(settings)
        while len(celery.control.ping(timeout=1)) < workers:
            time.sleep(0.2)
        client = create_app(settings).test_client()
        warm = base / "warm-up"
        for _ in range(workers):  # each worker loads the model before the timed job
            wait(client, submit(client, warm))
        r = redis.Redis.from_url(url)
        start = time.perf_counter()
        job_id = submit(client, images)
        holders: set[str] = set()
        while (record := client.get(f"/v1/jobs/{job_id}").get_json())["status"] in (
                "queued", "running"):
            for key in r.scan_iter(redis_keys.lease(job_id, leases.shard("*"))):
                holders.add((r.get(key) or b"").decode().split(":")[1])
            time.sleep(0.05)
        wall = time.perf_counter() - start
        assert record["status"] == "succeeded", record
        n = record["progress"]["total"]
        return {"workers": workers, "images": n, "wall_s": round(wall, 2),
                "images_per_s": round(n / wall, 1), "lease_holder_pids": sorted(holders - {""})}
    finally:
        stop(procs)
        stop([redis_proc])


def pinned_worker(settings: Settings, core: int) -> subprocess.Popen:
    """One worker process held to one CPU core: fetch, decode and forward all share it."""
    return subprocess.Popen(worker_command("inference", f"worker{core}"),
                            env={**os.environ, **settings.env(), **ONE_THREAD},
                            preexec_fn=lambda: os.sched_setaffinity(0, {core}))


def submit(client, folder: Path) -> str:
    return client.post("/v1/jobs", json={"type": "classify", "source": str(folder)}).get_json()["id"]


def wait(client, job_id: str) -> None:
    while client.get(f"/v1/jobs/{job_id}").get_json()["status"] in ("queued", "running"):
        time.sleep(0.05)


def main() -> None:
    import torch

    from runtime.network import build_alexnet, register_state

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--out", default="bench/out/scaling.json")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        paths = make_photos(base / "images", args.n, size)
        (base / "warm-up").mkdir()
        (base / "warm-up" / "one.jpg").write_bytes(paths[0].read_bytes())
        torch.manual_seed(0)
        registry = Registry(store_from_settings(Settings(store=str(base / "store"))))
        version = register_state(registry, build_alexnet(2).state_dict(), ["happy", "sad"])
        registry.promote(version["version"], "production", by="bench")
        one, two = run(1, base / "images", base), run(2, base / "images", base)
    figures = {"size": args.size, "one": one, "two": two,
               "ratio": round(two["images_per_s"] / one["images_per_s"], 2),
               "cpu_count": os.cpu_count()}
    print(json.dumps(figures, indent=2))
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
