"""How long a small scoring job takes while a training run holds the embedded stack's workers.

`python -m bench.beside_training [--epochs 40] [--images 8]` starts `facesense up` twice on a
fresh data dir and a Redis of the bench's own: once with one worker on both queues (the layout
`facesense up` had before issue 25, item 6: `--workers 0` plus such a worker) and once as
`facesense up --workers 1` now starts it (a scoring worker and a training worker). Each time
it queues a training run of --epochs on a tiny generated dataset (64 px), waits for its first
epoch, then submits --images photos for scoring and times the scoring job from submission to
its end; it prints that time, the training's epoch when the scoring ended, and the training's
own time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli.launcher import free_port, start_redis, start_workers, stop
from facesense.settings import Settings


def cli(env: dict, *args: str) -> str:
    """The CLI's stdout (it must succeed)."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, check=True,
                          capture_output=True, text=True, timeout=3600).stdout


def status(env: dict, job_id: str) -> dict:
    """A job's record (the CLI's exit code says how a finished job ended: not an error here)."""
    return json.loads(subprocess.run([sys.executable, "-m", "cli.main", "status", job_id, "--json"],
                                     env=env, capture_output=True, text=True, timeout=600).stdout)


def run(layout: str, epochs: int, images: int) -> dict:
    """One stack, one training run and one scoring job beside it; the times."""
    import torch

    from facesense.synthetic import make_dataset
    from runtime.network import build_alexnet
    from tests.imagegen import make_folder

    root = Path(tempfile.mkdtemp(prefix=f"beside-{layout}-"))
    data, inputs, port = root / "var", root / "inputs", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env.update(FACESENSE_DATA_DIR=str(data), FACESENSE_ALLOWED_ROOTS=str(inputs),
               FACESENSE_API_PORT=str(port), FACESENSE_PRECISION="fp32",
               FACESENSE_API_URL=f"http://127.0.0.1:{port}")
    make_dataset(inputs / "faces", per_class=16, seed=3)
    make_folder(inputs / "photos", images, max_side=200, corrupt=False)
    torch.manual_seed(0)
    torch.save(build_alexnet(2).state_dict(), root / "w.pt")
    cli(env, "models", "import", str(root / "w.pt"), "--classes", "happy,sad", "--promote",
        "--sample-images", "8")
    redis_proc, url = start_redis(data / "redis")  # one Redis for the API and every worker
    env["FACESENSE_REDIS_URL"] = url
    workers = "0" if layout == "shared" else "1"
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--workers", workers], env=env,
                          stdout=(root / "up.log").open("wb"), stderr=subprocess.STDOUT)
    extra = []
    try:
        if layout == "shared":  # the old default: one worker on both queues
            extra = start_workers(Settings.from_env(env), 1, env=env, queues="inference,training")
        while subprocess.run([sys.executable, "-m", "cli.main", "jobs"], env=env,
                             capture_output=True).returncode:
            time.sleep(0.5)
        train = cli(env, "train", str(inputs / "faces"), "--param", f"epochs={epochs}", "--param",
                    "image_size=64", "--param", "batch_size=8", "--param", "patience=0",
                    "--param", "min_steps=0").strip()
        started = time.monotonic()
        while (status(env, train).get("epoch") or 0) < 1:
            time.sleep(0.2)
        submitted = time.monotonic()
        job = cli(env, "submit", str(inputs / "photos")).strip()
        while status(env, job)["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.2)
        scored = time.monotonic() - submitted
        epoch = status(env, train).get("epoch")
        while status(env, train)["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.5)
        return {"layout": layout, "scoring_s": round(scored, 1), "training_epoch_then": epoch,
                "training_s": round(time.monotonic() - started, 1),
                "training": status(env, train)["status"], "scoring": status(env, job)["status"]}
    finally:
        stop(extra)
        up.send_signal(signal.SIGTERM)
        up.wait(60)
        stop([redis_proc])


def main() -> None:
    """Both layouts, one after the other."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    for layout in ("shared", "own-worker"):
        print(json.dumps(run(layout, args.epochs, args.images)), flush=True)


if __name__ == "__main__":
    main()
