"""The GPU proof in one run: the CUDA tests, then the GPU benchmarks, every figure in one file.

`python -m bench.gpu_check [--dry-run] [--n 20000] [--out PATH] [--skip STAGE,...]` (or
bench/gpu_check.sh, which first installs the wheels carried in .whl/) runs, in order:

  tests      tests/test_cuda.py (-m cuda): each test's outcome, and the reason of every skip
  model      AlexNet trained here on synthetic faces at 224 px, registered with its agreement
  precision  bench.precision on it: each variant's speed and agreement, bf16 at --big-batch
  model_only bf16 and bf16-full forward alone at --big-batch on inputs already on the GPU
  decode     the engine's CPU decode on every core against nvJPEG; what `auto` picks
  forward    the engine's forward pass alone at its batch, from host and from device memory
  engine     (c) worker.inference.score on --n 2 MP JPEGs, per decoder
  system     (d) API -> private Redis -> one worker on the GPU -> local store, --n images

then judges the targets (issue 30) and writes bench/out/gpu-<device>.json after every stage,
so a run cut short still leaves its figures. --dry-run hides any GPU and runs every stage on
the CPU with tiny sizes (bench/out/gpu-cpu-dryrun.json): CUDA tests report themselves skipped,
CUDA-only measurements say "not run". Exit code 1 if a test fails or a stage raises; a missed
target is a figure, not a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.gpu_report import ceilings, judge, summary

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("tests", "model", "precision", "model_only", "decode", "forward", "engine", "system")
# (GPU run, dry run): images for the engine and the system, distinct photos for precision,
# photos decoded both ways, synthetic faces per class and epochs for the benchmark model
# (epochs 0: an untrained model, speed only; the dry run's, as CPU training takes minutes),
# and the engine's batch (0: its default for the device, 256 on CUDA).
SIZES = {"n": (20_000, 16), "precision_n": (128, 8), "decode_n": (2048, 16),
         "per_class": (250, 20), "epochs": (8, 0), "batch": (0, 8)}


def device_slug(torch) -> str:
    """'h200' for 'NVIDIA H200', 'h100' for 'NVIDIA H100 80GB HBM3'; 'cpu' without CUDA."""
    if not torch.cuda.is_available():
        return "cpu"
    words = torch.cuda.get_device_name().lower().replace("nvidia", "").split()
    return words[0] if words else "cuda"


def nvidia_smi() -> str | None:
    """The GPU as nvidia-smi reports it (name, memory, driver, clocks), if it is there."""
    if not shutil.which("nvidia-smi"):
        return None
    query = "name,memory.total,driver_version,clocks.max.sm,clocks.sm,power.limit"
    done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or done.stderr.strip()


def run_tests(junit: Path) -> dict:
    """tests/test_cuda.py in a pytest of its own; every test's outcome and skip reason."""
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "--noconftest",
           "-p", "no:cacheprovider", "-q", "-rs", "--timeout=120", f"--junitxml={junit}"]
    # Bounded, so a hung test leaves the benchmarks their time in a device call of 8 minutes
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    tests = []
    for case in ET.parse(junit).iter("testcase") if junit.exists() else []:
        outcome, reason = "passed", None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome, reason = {"failure": "failed"}.get(tag, tag), found.get("message")
        tests.append({"name": case.get("name"), "outcome": outcome, "reason": reason,
                      "seconds": float(case.get("time") or 0)})
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "skipped", "failed",
                                                                 "error")}
    ok = done.returncode == 0 and counts["failed"] == counts["error"] == 0 and bool(tests)
    out = {"ok": ok, "exit_code": done.returncode, "counts": counts, "tests": tests}
    if not ok:  # the reason is in pytest's own output
        out["output_tail"] = (done.stdout + done.stderr)[-4000:]
    return out


def measure(args, figures: dict, out: Path) -> bool:
    """Run every stage not skipped, writing the figures after each; False if any raised."""
    import torch

    from runtime.device import default_batch_size
    device = torch.device("cuda" if figures["cuda"] else "cpu")
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="facesense-gpu-"))
    base.mkdir(parents=True, exist_ok=True)
    stages, ok, held = figures["stages"], True, {}
    plan = stage_plan(args, figures, base, device, args.batch or default_batch_size(device), held)
    for name in STAGES:
        if name in args.skip:
            stages[name] = "not run: --skip"
            continue
        if name in ("precision", "model_only", "forward", "engine", "system") and "loaded" not in held:
            stages[name] = "not run: no model (the model stage was skipped or failed)"
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            stages[name] = plan[name]()
            if (name == "tests" and not stages[name]["ok"]) or "error" in stages[name]:
                ok = False
        except Exception as e:  # one stage's failure must not cost the others' figures
            ok = False
            stages[name] = {"error": f"{type(e).__name__}: {e}",
                            "traceback": traceback.format_exc()[-3000:]}
        figures["seconds"][name] = round(time.perf_counter() - start, 1)
        print(f"   {json.dumps(stages[name], default=str)[:600]}", flush=True)
        if name == "forward":
            stages["ceiling"] = ceilings(stages.get("decode"), stages["forward"], figures["cuda"])
        figures["targets"] = judge(figures)
        out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return ok


def model_stage(args, base: Path, device, batch: int, held: dict) -> dict:
    """The model stage: the version, how it is served, and why; held gets the loaded model,
    its version and its folder, for the stages after it."""
    from bench import gpu_bench as gb

    failed = {}
    try:
        registry, manifest = gb.model(base, device, args.per_class, args.epochs)
    except Exception as e:  # the stages after it still measure speed, on an untrained model
        failed = {"error": f"training failed, an untrained model measured instead: "
                           f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-3000:]}
        registry, manifest = gb.model(base / "untrained", device, 0, 0)
    held["loaded"] = gb.loaded_model(registry, manifest["version"], device, batch)
    held["version"], held["base"] = manifest["version"], base if not failed else base / "untrained"
    return {"version": manifest["version"], "trained": "metrics" in manifest and not failed,
            "metrics": manifest.get("metrics"), "served_as": held["loaded"].precision,
            "reason": held["loaded"].reason,
            "agreement": (manifest.get("precision") or {}).get("variants"), **failed}


def stage_plan(args, figures: dict, base: Path, device, batch: int, held: dict) -> dict:
    """Each stage's run, by name; the later ones use what the model stage put in held."""
    from bench import gpu_bench as gb

    threads = os.cpu_count() or 2
    return {
        "tests": lambda: run_tests(base / "cuda-tests.xml"),
        "model": lambda: model_stage(args, base, device, batch, held),
        "precision": lambda: gb.precision(held["base"], args.precision_n, args.big_batch, device),
        "model_only": lambda: gb.model_only(held["loaded"], args.big_batch),
        # the first decode_n of the engine's photos: drawing 2 MP photos takes 0.2 s each
        "decode": lambda: gb.decode(gb.photos(base, args.n)[:args.decode_n], device, threads,
                                    batch),
        "forward": lambda: gb.forward_rates(held["loaded"], gb.photos(base, args.n), batch,
                                            0.5 if args.dry_run else 3.0),
        "engine": lambda: gb.engine(gb.photo_folder(base, args.n), held["loaded"],
                                    ["cpu", "gpu"] if figures["cuda"] else ["cpu"],
                                    gb.default_threads(), batch),
        "system": lambda: gb.system(gb.photo_folder(base, args.n), args.n, base,
                                    held["version"], args.batch),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, with each size defaulted for a GPU run or a dry run."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="hide any GPU; every stage on the CPU, "
                   "tiny sizes")
    for name, (gpu, dry) in SIZES.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int,
                       help=f"default {gpu} ({dry} in a dry run)")
    p.add_argument("--big-batch", type=int, default=1024, help="model-only batch (default 1024)")
    p.add_argument("--skip", default="", help=f"comma-separated stages to leave out: {','.join(STAGES)}")
    p.add_argument("--dir", help="working folder (default: a new temp folder)")
    p.add_argument("--out", help="figures file, or a folder for gpu-<device>.json (default "
                   "bench/out/: gpu-h200.json on an H200, gpu-cpu-dryrun.json in a dry run)")
    args = p.parse_args(argv)
    for name, (gpu, dry) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, dry if args.dry_run else gpu)
    args.skip = {s for s in args.skip.split(",") if s}
    if args.skip - set(STAGES):
        p.error(f"unknown stage(s) in --skip: {', '.join(sorted(args.skip - set(STAGES)))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 if every test passed or was skipped and no stage raised."""
    args = parse_args(argv)
    if args.dry_run:  # before torch touches CUDA; the tests' and the worker's processes inherit it
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    from bench.common import machine
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("no CUDA device here: run with --dry-run", file=sys.stderr)
        return 2
    slug = f"{device_slug(torch)}{'-dryrun' if args.dry_run else ''}"
    out = Path(args.out) if args.out else ROOT / "bench" / "out"
    out = out / f"gpu-{slug}.json" if out.is_dir() else out
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = {"device": slug, "dry_run": args.dry_run, "cuda": cuda,
               "machine": {**machine(), "cuda_runtime": torch.version.cuda,
                           "nvidia_smi": nvidia_smi()},
               "sizes": {k: getattr(args, k) for k in (*SIZES, "big_batch")},
               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": {}, "stages": {}}
    start = time.perf_counter()
    ok = measure(args, figures, out)
    figures["seconds"]["total"] = round(time.perf_counter() - start, 1)
    figures["ok"] = ok
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(summary(figures))
    print(f"figures written to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
