"""One big scoring job end to end: planning, throughput, page latency, bytes kept per image.

`python -m bench.bigjob [--sizes 10000 100000]` scores a folder of small JPEGs (64x48, hard
links to 64 distinct photos) per size on the embedded stack (private Redis, one worker, local
store) and prints, per size: plan time (submit to every shard planned), images/s, the results
page latency (API, limit 100) at offsets 0, middle and end, store bytes per image beyond the
results files (in all and by folder: plans, shard files, thumbnails), the job's Redis bytes,
and the worker's peak RSS. Figures go to bench/out/bigjob.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import OUT, machine, peak_rss_mb, rate
from bench.photos import make_photos

RESULT_FILES = ("results.jsonl", "results.csv", "summary.json", "results.index.json", "job.json")


def page_ms(client, job_id: str, offset: int, repeats: int = 5) -> float:
    """Median milliseconds of one results page of 100 rows at offset."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        page = client.get(f"/v1/jobs/{job_id}/results?offset={offset}&limit=100").get_json()
        times.append((time.perf_counter() - start) * 1000)
        assert page["rows"], page
    return round(sorted(times)[len(times) // 2], 2)


def extra_store_bytes(store_root: Path, job_id: str) -> dict[str, int]:
    """Bytes the job keeps in the store besides its results files, by top folder (plan,
    shards, thumbs, ...)."""
    folder = store_root / "jobs" / job_id
    out: dict[str, int] = {}
    for p in folder.rglob("*"):
        if p.is_file() and p.name not in RESULT_FILES:
            top = p.relative_to(folder).parts[0]
            out[top] = out.get(top, 0) + p.stat().st_size
    return out


def run(n: int, base: Path) -> dict:
    """Score n images in one job; the figures above."""
    import redis
    import torch

    from api import create_app
    from cli.launcher import start_redis, start_workers, stop
    from facesense.queue import make_celery
    from facesense.registry import Registry
    from facesense.settings import Settings
    from facesense.state import redis_keys
    from facesense.storage import store_from_settings
    from runtime.network import build_alexnet, register_state

    root = base / f"photos-{n}"
    make_photos(root, n, (64, 48))
    redis_proc, url = start_redis(base / f"redis-{n}")
    store = base / f"store-{n}"
    settings = Settings.from_env(redis_url=url, store=str(store), allowed_roots=(str(base),),
                                 data_dir=str(base / "var"))
    registry = Registry(store_from_settings(settings))
    if not registry.alias("production"):  # a seeded random-init model: speed, not accuracy
        torch.manual_seed(0)
        manifest = register_state(registry, build_alexnet(2).state_dict(), ["happy", "sad"])
        registry.promote(manifest["version"], "production", by="bench.bigjob")
    workers = start_workers(settings, 1, queues="inference")
    try:
        while not make_celery(settings).control.ping(timeout=1):
            time.sleep(0.2)
        client = create_app(settings).test_client()
        start = time.perf_counter()
        resp = client.post("/v1/jobs", json={"type": "classify", "source": str(root)}).get_json()
        job_id = resp["id"]
        planned = None
        while (rec := client.get(f"/v1/jobs/{job_id}").get_json())["status"] in ("queued", "running"):
            if planned is None and rec["progress"]["shards"]:
                planned = time.perf_counter() - start
            time.sleep(0.05)
        wall = time.perf_counter() - start
        assert rec["status"] == "succeeded" and rec["progress"]["total"] == n, rec
        r = redis.Redis.from_url(url)
        extra = extra_store_bytes(store, job_id)
        return {"images": n, "plan_s": round(planned or wall, 2), "wall_s": round(wall, 2),
                "images_per_s": rate(n, wall),
                "page_ms": {"0": page_ms(client, job_id, 0), "middle": page_ms(client, job_id, n // 2),
                            "end": page_ms(client, job_id, n - 100)},
                "store_bytes_per_image_beyond_results": round(sum(extra.values()) / n, 1),
                "store_bytes_per_image_by_folder": {k: round(v / n, 1) for k, v in extra.items()},
                # exact (SAMPLES 0): the default samples 5 fields of a hash and extrapolates
                "redis_bytes_for_job": sum(r.memory_usage(k, samples=0) or 0
                                           for k in r.scan_iter(redis_keys.job(job_id) + "*")),
                # of which the record's summary, bounded by FACESENSE_SUMMARY_MAX_GROUPS groups
                "redis_bytes_summary": len(r.hget(redis_keys.job(job_id), "summary") or b""),
                "worker_peak_rss_mb": peak_rss_mb(workers[0].pid)}
    finally:
        stop(workers)
        stop([redis_proc])


def main() -> None:
    """Run each size, print the figures and the ratios, write the JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.bigjob", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facesense-bigjob")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for n in args.sizes:
        runs[n] = run(n, args.dir)
        print(json.dumps(runs[n]), flush=True)
    small, big = runs[min(args.sizes)], runs[max(args.sizes)]
    ratios = {"page_end_over_start": round(big["page_ms"]["end"] / big["page_ms"]["0"], 2),
              "worker_rss_big_over_small": round(big["worker_peak_rss_mb"]
                                                 / small["worker_peak_rss_mb"], 3),
              "redis_bytes_big_over_small": round(big["redis_bytes_for_job"]
                                                  / small["redis_bytes_for_job"], 3),
              "redis_bytes_beyond_summary_big_over_small": round(
                  (big["redis_bytes_for_job"] - big["redis_bytes_summary"])
                  / (small["redis_bytes_for_job"] - small["redis_bytes_summary"]), 3)}
    print(json.dumps(ratios))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bigjob.json").write_text(json.dumps({"machine": machine(), "runs": runs,
                                                 "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
