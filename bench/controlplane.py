"""The control plane's ceiling: what Redis and the store spend per image, as workers grow.

`python -m bench.controlplane [--workers 1 8 32 128] [--stores local s3]` runs, per store
and worker count, a fresh redis-server, one real Celery worker process whose thread pool holds
N simulated workers (bench.cp_worker: the real task, scheduler, leases, counts and shard files;
a stand-in scorer that spends 256 / 2,500 s per 256-image batch, as an H200-class GPU would, and
reads no image), a control worker, and the API in this process. Jobs of 8 shards (`--shard`
images each, 256 by default) are submitted until every worker has about 4 to run. Printed and
written to bench/out/controlplane-STORES-SHARD.json: per image and per shard, Redis commands
and Redis main-thread CPU (INFO deltas over the run), store requests by kind (S3: by
operation, as billed), the scheduler's pick latency (p50 / p99, client side), and the workers
one Redis core could serve.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import OUT, machine

GPU_IMAGES_PER_S = 2500.0  # one H200-class worker
SHARD = 256  # the default FACESENSE_SHARD_SIZE; --shard changes it
BATCH = 256  # images per forward pass
FINAL = ("succeeded", "failed", "cancelled")


def redis_cpu(info: dict) -> float:
    """Seconds of CPU Redis's main thread used (what one core bounds)."""
    if "used_cpu_sys_main_thread" in info:
        return info["used_cpu_sys_main_thread"] + info["used_cpu_user_main_thread"]
    return info["used_cpu_sys"] + info["used_cpu_user"]


def make_source(root: Path, s3, bucket: str | None, n: int) -> str:
    """n one-byte 'images' over 8 group folders: listed by the plan, never read."""
    keys = [f"g{i % 8}/img{i:05d}.jpg" for i in range(n)]
    if s3 is None:
        for key in keys:
            (root / "src" / key).parent.mkdir(parents=True, exist_ok=True)
            (root / "src" / key).write_bytes(b"x")
        return str(root / "src")
    for key in keys:
        s3.put_object(Bucket=bucket, Key=f"src/{key}", Body=b"x")
    return f"s3://{bucket}/src"


def start(cmd_args: list[str], stats: Path, rate: float, settings, log) -> subprocess.Popen:
    env = {**os.environ, **settings.env(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bench.cp_worker", str(stats), str(rate), "--", *cmd_args]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def run(root: Path, workers: int, store: str, endpoint: str | None, shard: int = SHARD) -> dict:
    """One measured run; returns its figures."""
    from cli.launcher import start_redis, stop
    from facesense.settings import Settings
    from tests.servers import s3_client
    from tests.stack import register_small_model

    root.mkdir(parents=True)
    redis_proc, url = start_redis(root / "redis")
    s3 = s3_client(endpoint) if store == "s3" else None
    bucket = f"cp{os.getpid()}-{workers}"
    if s3:
        s3.create_bucket(Bucket=bucket)
    settings = Settings(redis_url=url, store=f"s3://{bucket}/store" if s3 else str(root / "store"),
                        s3_endpoint_url=endpoint or "", allowed_roots=(str(root),),
                        data_dir=str(root / "var"), shard_size=shard, batch_size=BATCH,
                        precision="fp32", control_sidecar=0, queue_depth=max(64, 2 * workers))
    register_small_model(settings)
    per_job = 8 * shard  # 8 shards a job
    source = make_source(root, s3, bucket, per_job)
    jobs = max(4, -(-workers * 4 // 8))  # about 4 shards per worker
    procs = start_workers(root, workers, settings)
    try:
        wall, before, after, stats = measure(settings, procs, source, jobs)
    finally:
        stop(procs, timeout=30)
        stop([redis_proc])
    return figures(root, store, workers, shard, jobs * per_job, jobs, wall,
                   (before, after, stats))


def start_workers(root: Path, workers: int, settings) -> list[subprocess.Popen]:
    """A scoring worker of `workers` threads and a control worker, logging to workers.log."""
    log = (root / "workers.log").open("wb")
    return [start(["-A", "worker.celery_app", "worker", "-Q", "inference", "-P", "threads",
                   "-c", str(workers), "-n", f"cp-{workers}@%h", "--without-gossip",
                   "--without-mingle", "-l", "WARNING"], root / "worker.json",
                  GPU_IMAGES_PER_S, settings, log),
            start(["-A", "worker.control", "worker", "-Q", "control", "-P", "threads", "-c", "8",
                   "-n", f"control-{workers}@%h", "--without-gossip", "--without-mingle",
                   "--without-heartbeat", "-l", "WARNING"], root / "control.json", 0,
                  settings, log)]


def measure(settings, procs: list[subprocess.Popen], source: str, jobs: int):
    """Submit the jobs through the API and wait for them all: (wall seconds, Redis INFO before
    and after, Redis commandstats)."""
    import redis

    from api import create_app
    from bench import cp_worker
    from tests.conftest import wait_for_workers

    wait_for_workers(settings, procs[:1])
    cp_worker.install(None)  # the API's store requests count too
    api = create_app(settings).test_client()
    r = redis.Redis.from_url(settings.redis_url)
    r.config_resetstat()
    cp_worker.counts.clear()  # what this process did before (the model, a previous run)
    before, started = r.info(), time.monotonic()
    ids = []
    for _ in range(jobs):
        resp = api.post("/v1/jobs", json={"type": "classify", "source": source})
        assert resp.status_code == 202, resp.get_json()
        ids.append(resp.get_json()["id"])
    pending = list(ids)  # one job polled at a time, twice a second: little Redis of ours
    while pending:
        time.sleep(0.5)
        while pending and (status := api.get(f"/v1/jobs/{pending[0]}").get_json()["status"]) in FINAL:
            assert status == "succeeded", status
            pending.pop(0)
    wall = time.monotonic() - started
    return wall, before, r.info(), r.info("commandstats")


def figures(root: Path, store: str, workers: int, shard: int, images: int, jobs: int,
            wall: float, redis_info: tuple[dict, dict, dict]) -> dict:
    """A run's figures: rates, Redis commands and CPU, store requests, pick times."""
    from bench import cp_worker

    before, after, stats = redis_info
    totals, picks = Counter(cp_worker.counts), []
    for name in ("worker.json", "control.json"):
        data = json.loads((root / name).read_text())
        totals.update(data["counts"])
        picks += data["picks_s"]
    shards = jobs * 8
    commands = after["total_commands_processed"] - before["total_commands_processed"]
    cpu = redis_cpu(after) - redis_cpu(before)
    kind = "s3." if store == "s3" else "local."
    requests = {k.removeprefix(kind): v for k, v in sorted(totals.items()) if k.startswith(kind)}
    picks.sort()
    per_image_cpu = cpu / images
    return {"store": store, "workers": workers, "shard_size": shard, "jobs": jobs,
            "images": images, "shards": shards,
            "wall_s": round(wall, 1), "images_per_s": round(images / wall),
            "redis_commands_per_image": round(commands / images, 3),
            "redis_commands_per_shard": round(commands / shards, 1),
            "redis_cpu_us_per_image": round(per_image_cpu * 1e6, 2),
            "redis_cpu_ms_per_shard": round(cpu / shards * 1e3, 3),
            "store_requests": requests,
            "store_requests_per_image": round(sum(requests.values()) / images, 4),
            "store_requests_per_shard": round(sum(requests.values()) / shards, 2),
            "pick_ms_p50": round(picks[len(picks) // 2] * 1e3, 2) if picks else None,
            "pick_ms_p99": round(picks[int(len(picks) * 0.99)] * 1e3, 2) if picks else None,
            "picks": len(picks),
            "redis_calls_per_shard": {k.removeprefix("cmdstat_"): round(v["calls"] / shards, 1)
                                      for k, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:12]},
            "redis_cpu_share": {k.removeprefix("cmdstat_"): round(v["usec"] / 1e6 / cpu, 3)
                                for k, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:8]},
            # one Redis core is 1 s of CPU per second: this many 2,500-image/s workers fill it
            "workers_per_redis_core": int(1 / (per_image_cpu * GPU_IMAGES_PER_S)) if cpu else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--shard", type=int, default=SHARD, help="images per shard")
    parser.add_argument("--stores", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    args = parser.parse_args(argv)
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench-secret"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
        os.environ.setdefault(name, value)  # the local S3 server takes any key; no EC2 lookups
    from cli.launcher import stop
    from tests.servers import start_seaweed

    results = []
    with tempfile.TemporaryDirectory(prefix="controlplane-") as tmp:
        base, weed, endpoint = Path(tmp), None, None
        if "s3" in args.stores:
            weed, endpoint = start_seaweed(base / "seaweed")
        try:
            for store in args.stores:
                for n in args.workers:
                    result = run(base / f"{store}-{n}-{args.shard}", n, store, endpoint,
                                 args.shard)
                    print(json.dumps(result), flush=True)
                    results.append(result)
        finally:
            if weed:
                stop([weed], timeout=3)
    OUT.mkdir(exist_ok=True)
    name = f"controlplane-{'-'.join(args.stores)}-{args.shard}.json"
    (OUT / name).write_text(json.dumps({"machine": machine(), "runs": results},
                                                      indent=1) + "\n")


if __name__ == "__main__":
    main()
