"""Fair sharing: a small job behind a big one, and a high-priority job behind two normal ones.

`python -m bench.fairness [--sizes 3000 10000 30000] [--workers 1 2]` runs the embedded stack
(private Redis, local store, default settings: 256-image shards, one solo worker per process,
one OpenMP thread each when there are two) on 64x48 JPEGs. Per worker count and big-job size:
the big job is submitted; once it has counted 3 shards, a 20-image job follows. Printed: the
small job's wait (its submission to its first shard starting) in seconds and in shard-times
(one shard's time on one worker, measured on the big job before the small one came), its own
time, and its wait as a share of the big job's time. The smallest big job runs to its end;
bigger ones are cancelled once the small job is done, their time projected from their rate
("projected": true). Then two normal jobs of the smallest size and, once both run, a 256-image
`high` job: its wait, and how many normal shards were counted meanwhile (those in flight when
it came, at most one per worker). Figures go to bench/out/fairness.json with the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import OUT, machine
from bench.photos import make_photos

FINAL = ("succeeded", "failed", "cancelled")


class Stack:
    """Redis, a local store, the API in process and n workers."""

    def __init__(self, base: Path, workers: int):
        import torch

        from api import create_app
        from cli.launcher import start_redis, start_workers
        from facesense.queue import make_celery
        from facesense.registry import Registry
        from facesense.settings import Settings
        from facesense.storage import store_from_settings
        from runtime.network import build_alexnet, register_state

        self.base, self.n = base, workers
        self.redis_proc, url = start_redis(base / f"redis-{workers}")
        self.settings = Settings.from_env(redis_url=url, store=str(base / f"store-{workers}"),
                                          allowed_roots=(str(base),), data_dir=str(base / "var"))
        registry = Registry(store_from_settings(self.settings))
        torch.manual_seed(0)  # a random-init model: speed, not accuracy
        manifest = register_state(registry, build_alexnet(2).state_dict(), ["happy", "sad"])
        registry.promote(manifest["version"], "production", by="bench.fairness")
        env = {"OMP_NUM_THREADS": "1"} if workers > 1 else {}
        self.workers = start_workers(self.settings, workers, env=env, queues="inference")
        app = make_celery(self.settings)
        while len(app.control.ping(timeout=1)) < workers:
            time.sleep(0.2)
        self.api = create_app(self.settings).test_client()

    def submit(self, n: int, name: str, priority: str = "normal") -> str:
        folder = self.base / f"photos-{name}-{n}"
        make_photos(folder, n, (64, 48))
        body = {"type": "classify", "source": str(folder), "priority": priority}
        return self.api.post("/v1/jobs", json=body).get_json()["id"]

    def job(self, job_id: str) -> dict:
        return self.api.get(f"/v1/jobs/{job_id}").get_json()

    def until(self, job_id: str, check) -> tuple[dict, float]:
        """Poll the job until check(record); returns it and when (perf_counter)."""
        while not check(record := self.job(job_id)):
            time.sleep(0.02)
        return record, time.perf_counter()

    def end(self, job_id: str) -> dict:
        return self.until(job_id, lambda r: r["status"] in FINAL)[0]

    def stop(self):
        from cli.launcher import stop

        stop(self.workers)
        stop([self.redis_proc])


def shards(record: dict) -> int:
    return record["progress"]["shards_done"]


def small_behind_big(stack: Stack, big_n: int, run_to_end: bool) -> dict:
    """The small job's wait behind a big job of big_n images."""
    big = stack.submit(big_n, f"big{stack.n}")
    _, t1 = stack.until(big, lambda r: shards(r) >= 1)
    _, t3 = stack.until(big, lambda r: shards(r) >= 3)
    shard_s = (t3 - t1) * stack.n / 2  # one shard on one worker
    small = stack.submit(20, f"small{stack.n}-{big_n}")
    done = stack.end(small)
    assert done["status"] == "succeeded", done
    wait = done["started_at"] - done["created_at"]
    if run_to_end:
        rec = stack.end(big)
        big_s, projected = rec["finished_at"] - rec["started_at"], False
    else:
        rec = stack.job(big)
        elapsed = time.time() - rec["started_at"]
        big_s, projected = elapsed * rec["progress"]["total"] / max(1, rec["progress"]["done"]), True
        stack.api.post(f"/v1/jobs/{big}/cancel")
        stack.end(big)
    return {"workers": stack.n, "big_images": big_n, "shard_s": round(shard_s, 2),
            "small_wait_s": round(wait, 2), "small_wait_shards": round(wait / shard_s, 2),
            "small_total_s": round(done["finished_at"] - done["created_at"], 2),
            "big_s": round(big_s, 1), "projected": projected,
            "small_wait_share_of_big": round(wait / big_s, 4)}


def high_behind_normal(stack: Stack, n: int) -> dict:
    """A high job behind two normal ones: its wait, and the normal shards counted meanwhile."""
    normal = [stack.submit(n, f"normal{stack.n}-{i}") for i in range(2)]
    for job_id in normal:
        stack.until(job_id, lambda r: shards(r) >= 1)
    before = sum(shards(stack.job(j)) for j in normal)
    high = stack.submit(256, f"high{stack.n}", priority="high")
    done = stack.end(high)
    during = sum(shards(stack.job(j)) for j in normal) - before
    for job_id in normal:
        stack.api.post(f"/v1/jobs/{job_id}/cancel")
        stack.end(job_id)
    return {"workers": stack.n, "normal_jobs": 2, "normal_images": n,
            "high_wait_s": round(done["started_at"] - done["created_at"], 2),
            "high_total_s": round(done["finished_at"] - done["created_at"], 2),
            "normal_shards_counted_meanwhile": during}


def main() -> None:
    """Each worker count, each size; print the figures, write the JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[3000, 10_000, 30_000])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facesense-fairness")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    small_runs, high_runs = [], []
    for workers in args.workers:
        stack = Stack(args.dir, workers)
        try:
            for n in sorted(args.sizes):
                small_runs.append(small_behind_big(stack, n, run_to_end=n == min(args.sizes)))
                print(json.dumps(small_runs[-1]), flush=True)
            high_runs.append(high_behind_normal(stack, min(args.sizes)))
            print(json.dumps(high_runs[-1]), flush=True)
        finally:
            stack.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fairness.json").write_text(json.dumps(
        {"machine": machine(), "small_behind_big": small_runs, "high_behind_normal": high_runs},
        indent=2))


if __name__ == "__main__":
    main()
