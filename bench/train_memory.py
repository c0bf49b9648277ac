"""Peak memory of training as the dataset grows: the decoded images stay on local disk.

`python -m bench.train_memory [--sizes 2000 20000] [--steps 0]` makes a synthetic face dataset
of each size, then in a fresh process per size loads it at 224 px (decoding every image once)
and trains (one epoch, or --steps optimisation steps of batch 32), and prints that process's
peak RSS; the ratio between the largest and the smallest size is the figure that matters.
Figures go to bench/out/train-memory.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import OUT, machine

CHILD = """
import json, resource, sys, time
from pathlib import Path
import torch
from facesense.storage import LocalStore
from facesense.trainparams import TrainParams
from runtime.preprocess import spec_for
from trainer.data import load_data
from trainer.engine import Stopped
from trainer.train import fit

root, steps = Path(sys.argv[1]), int(sys.argv[2])
params = TrainParams.parse({"epochs": 1, "image_size": 224, "batch_size": 32, "val_split": 0.05})
spec = spec_for(params.image_size)
start = time.perf_counter()
data = load_data(LocalStore(root), val_split=params.val_split, seed=0, spec=spec,
                 cache_dir=root.parent / "cache", max_pixels=10**8, threads=4)
loaded = time.perf_counter() - start
calls = [0]
def stop():
    calls[0] += 1
    return bool(steps) and calls[0] > steps
try:
    fit(data, params, spec, device=torch.device("cpu"), precision="fp32", should_stop=stop)
except Stopped:
    pass
print(json.dumps({"images": len(data.train_y) + len(data.val_y), "load_s": round(loaded, 1),
                  "steps": min(calls[0], steps) if steps else calls[0],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def measure(n: int, steps: int, work: Path) -> dict:
    """Train on n synthetic faces in a fresh process; its peak RSS and timings."""
    from facesense.synthetic import make_dataset

    root = work / f"faces-{n}"
    if not root.exists():
        make_dataset(root, per_class=n // 2, seed=n)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(steps)], check=True,
                         capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    """Measure each size, print the figures and the ratio, write the JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.train_memory", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: an epoch)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facesense-train-mem")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for n in args.sizes:
        runs[n] = measure(n, args.steps, args.dir)
        print(f"{n:>7} images: peak RSS {runs[n]['peak_rss_mb']} MB, load {runs[n]['load_s']} s, "
              f"{runs[n]['steps']} steps, {runs[n]['wall_s']} s", flush=True)
    small, big = min(args.sizes), max(args.sizes)
    ratio = round(runs[big]["peak_rss_mb"] / runs[small]["peak_rss_mb"], 3)
    print(f"peak RSS {big} / {small} images: {ratio} (target <= 1.3)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train-memory.json").write_text(json.dumps(
        {"machine": machine(), "steps": args.steps or "one epoch", "runs": runs,
         "ratio": ratio, "parent_peak_rss_mb": round(
             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}, indent=2))


if __name__ == "__main__":
    main()
