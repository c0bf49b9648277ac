"""(d) The whole system for bench.throughput and bench.gpu_bench: API -> Redis -> one worker ->
local store, timed to `succeeded`; with a worker's peak RSS and Redis bytes per job."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import peak_rss_mb, rate
from bench.photos import make_photos


def bench_d(root: Path, n: int, base: Path, settings_kw: dict, sample_memory: bool = False):
    """(d) The whole system: API -> Redis -> one worker -> local store, timed to `succeeded`.

    A one-image job runs first, so the figure is the steady state of a running worker (model
    loaded), not its start-up.
    """
    import redis

    from api import create_app
    from cli.launcher import start_redis, start_workers, stop
    from facesense.queue import make_celery
    from facesense.settings import Settings
    from facesense.state import redis_keys

    redis_proc, url = start_redis(base / f"redis-{n}")
    settings = Settings.from_env(redis_url=url, allowed_roots=(str(root.parent),), **settings_kw)
    workers = start_workers(settings, 1, queues="inference")
    try:
        celery = make_celery(settings)
        while not celery.control.ping(timeout=1):
            time.sleep(0.2)
        client = create_app(settings).test_client()
        warm = root.parent / "warm-up"  # one image: the worker loads the model before timing
        if not warm.exists():
            warm.mkdir()
            os.link(next(root.rglob("*.jpg")), warm / "one.jpg")
        job = client.post("/v1/jobs", json={"type": "classify", "source": str(warm)}).get_json()
        while client.get(f"/v1/jobs/{job['id']}").get_json()["status"] in ("queued", "running"):
            time.sleep(0.05)
        r = redis.Redis.from_url(url)
        before = r.info("memory")["used_memory"]
        start = time.perf_counter()
        job = client.post("/v1/jobs", json={"type": "classify", "source": str(root)}).get_json()
        while (rec := client.get(f"/v1/jobs/{job['id']}").get_json())["status"] in (
                "queued", "running"):
            time.sleep(0.05)
        wall = time.perf_counter() - start
        assert rec["status"] == "succeeded" and rec["progress"]["total"] == n, rec
        job_keys = [k for k in r.scan_iter(redis_keys.job(job["id"]) + "*")]
        per_job = sum(r.memory_usage(k) or 0 for k in job_keys)
        out = {"images_per_s": rate(n, wall), "wall_s": round(wall, 2),
               "redis_bytes_for_job": per_job,
               "redis_used_memory_delta": r.info("memory")["used_memory"] - before,
               "precision": rec.get("precision"), "device": rec.get("device"),
               "decoder": rec.get("decoder")}
        if sample_memory:
            out["worker_peak_rss_mb"] = peak_rss_mb(workers[0].pid)
        return out
    finally:
        stop(workers)
        stop([redis_proc])


def memory(base: Path, precision: str) -> dict:
    """Worker peak RSS and Redis bytes for a 1,000- and a 10,000-image job (hard-linked files)."""
    out = {}
    for n in (1000, 10000):
        root = base / f"many-{n}"
        make_photos(root, n, (1600, 1200), unique=64)
        out[n] = bench_d(root, n, base, {"store": str(base / "store"), "precision": precision},
                         sample_memory=True)
    out["rss_ratio_10k_over_1k"] = round(out[10000]["worker_peak_rss_mb"] /
                                         out[1000]["worker_peak_rss_mb"], 3)
    return out
