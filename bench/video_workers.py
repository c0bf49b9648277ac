"""Reaction videos through the API: a long video scored by 1 and by 2 pinned worker processes
(wall time), and a worker's peak RSS for it and for a 1-minute one (bench.video's workers part)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.common import peak_rss_mb
from bench.face_photos import astronaut
from bench.webcam import make_video
from facesense.inputs.video.limits import VideoLimits
from facesense.inputs.video.probe import probe
from runtime.network import build_alexnet


def workers_figures(base: Path, minutes: float, fps: float) -> dict:
    """A long video scored through the API by 1 and by 2 pinned workers (wall time), and one
    worker's peak RSS for it and for a 1-minute video."""
    from facesense.registry import Registry
    from facesense.settings import Settings
    from facesense.storage import store_from_settings
    from runtime.network import register_state

    for folder in ("long", "short", "warm-up"):
        (base / folder).mkdir()
    long = make_video(base / "long" / "viewer.mp4", 60 * minutes)
    make_video(base / "short" / "viewer.mp4", 60)
    astronaut().save(base / "warm-up" / "one.jpg")
    torch.manual_seed(0)
    registry = Registry(store_from_settings(Settings(store=str(base / "store"))))
    version = register_state(registry, build_alexnet(2).state_dict(), ["happy", "sad"])
    registry.promote(version["version"], "production", by="bench")
    one, two = run_stack(1, base / "long", base, fps), run_stack(2, base / "long", base, fps)
    short = run_stack(1, base / "short", base, fps)
    return {"long_video_s": round(probe(long, VideoLimits(max_seconds=1e9)).duration, 1),
            "video_fps": fps, "one_worker": one, "two_workers": two, "short_one_worker": short,
            "time_ratio_2_vs_1": round(two["wall_s"] / one["wall_s"], 2),
            "rss_ratio_long_vs_short": round(one["peak_rss_mb"][0] / short["peak_rss_mb"][0], 2)}


def run_stack(workers: int, folder: Path, base: Path, fps: float) -> dict:
    """Score a folder's videos at fps with this many pinned workers on a private Redis."""
    import redis

    from api import create_app
    from bench.scaling import pinned_worker, wait
    from cli.launcher import start_redis, stop
    from facesense.queue import make_celery
    from facesense.settings import Settings
    from facesense.state import leases, redis_keys

    redis_proc, url = start_redis(base / f"redis-{workers}-{folder.name}")
    settings = Settings.from_env(redis_url=url, store=str(base / "store"),
                                 allowed_roots=(str(base),), decode_threads=1)
    procs = [pinned_worker(settings, core) for core in range(workers)]
    try:
        while len(make_celery(settings).control.ping(timeout=1)) < workers:
            time.sleep(0.2)
        client = create_app(settings).test_client()
        for _ in range(workers):  # each worker loads the model before the timed job
            wait(client, submit(client, base / "warm-up"))
        r = redis.Redis.from_url(url)
        start, holders = time.perf_counter(), set()
        job_id = submit(client, folder, fps)
        while client.get(f"/v1/jobs/{job_id}").get_json()["status"] in ("queued", "running"):
            for key in r.scan_iter(redis_keys.lease(job_id, leases.shard("*"))):
                holders.update((r.get(key) or b"").decode().split(":")[1:2])  # released: none
            time.sleep(0.05)
        wall = time.perf_counter() - start
        record = client.get(f"/v1/jobs/{job_id}").get_json()
        assert record["status"] == "succeeded", record
        frames = record["progress"]["done"]
        return {"workers": workers, "frames": frames, "wall_s": round(wall, 1),
                "frames_per_s": round(frames / wall, 1),
                "peak_rss_mb": [peak_rss_mb(p.pid) for p in procs],
                "shard_holder_pids": sorted(holders - {""})}
    finally:
        stop(procs)
        stop([redis_proc])


def submit(client, folder: Path, fps: float = 5) -> str:
    """A faces-off scoring job of the folder at fps; its id."""
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(folder),
                                         "video_fps": fps, "faces": False})
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]
