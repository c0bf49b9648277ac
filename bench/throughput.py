"""Throughput of the scoring pipeline against the ways a user would otherwise score a folder.

`python -m bench.throughput [--n 400] [--size 1600x1200] [--memory]` generates photo-like JPEGs
and measures, in one run, images/s for:

  (a) the original script's way: one image at a time, PIL + torchvision transforms, model(x[None])
  (b) a torchvision-style Dataset with DataLoader(batch_size=64, num_workers=2)
  (c) the engine alone (worker.inference.score) on the same folder
  (d) the whole system: submit through the API on the embedded stack until results are written
  (e) the ceiling: decode alone and forward alone (pre-decoded tensors), combined for the same cores
  (f) the peer: Ray Data batch inference as Ray's documentation shows it (bench/ray_peer.py)

The model is a trained one: bench.precision's, trained once at 224 px into --dir and registered
as a worker registers a version (agreement with fp32 measured on its validation images), or
--store's production version, re-registered at 224 px with its agreement measured on benchmark
photos. (c), (d) and (e) run at the precision a worker chooses for it here (auto).

It prints a table with ratios and writes the figures as JSON (bench/out/). With --memory it also
measures a worker's peak RSS for a 1,000- and a 10,000-image job and Redis memory per job.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from bench.common import OUT, machine, rate, trained_model
from bench.photos import make_photos
from bench.system import bench_d, memory
from facesense.registry import Registry
from facesense.storage import LocalStore
from runtime.device import default_batch_size, default_threads
from runtime.network import build_alexnet, load_model, register_state
from runtime.precision import CALIBRATION_IMAGES, generated_sample, record
from runtime.preprocess import preprocess, spec_for
from runtime.serving import LoadedModel, forward
from worker.inference import score
from worker.model_cache import ModelCache


def reference_transform(spec: dict):
    """What a PyTorch user writes: torchvision's classic ImageNet evaluation transform."""
    return T.Compose([T.Resize(spec["resize_size"]), T.CenterCrop(spec["input_size"]),
                      T.ToTensor(), T.Normalize(spec["mean"], spec["std"])])


def bench_a(paths, model, spec) -> float:
    """(a) One image at a time."""
    tf = reference_transform(spec)
    start = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            model(tf(Image.open(p).convert("RGB"))[None])
    return rate(len(paths), time.perf_counter() - start)


class FolderDataset(torch.utils.data.Dataset):
    """A torchvision-style dataset over image files."""

    def __init__(self, paths, tf):
        self.paths, self.tf = paths, tf

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.tf(Image.open(self.paths[i]).convert("RGB"))


def bench_b(paths, model, spec) -> float:
    """(b) Dataset + DataLoader(batch_size=64, num_workers=2)."""
    loader = torch.utils.data.DataLoader(FolderDataset(paths, reference_transform(spec)),
                                         batch_size=64, num_workers=2)
    start = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            model(batch)
    return rate(len(paths), time.perf_counter() - start)


def bench_c(root: Path, loaded: LoadedModel) -> float:
    """(c) The engine alone on the folder."""
    store = LocalStore(root)
    keys = list(store.list())
    start = time.perf_counter()
    rows = sum(1 for _ in score(keys, loaded, lambda k, _limit: store.get(k), batch_size=default_batch_size(
        loaded.device), threads=default_threads(), max_pixels=10**9, max_bytes=1 << 30))
    assert rows == len(keys)
    return rate(len(keys), time.perf_counter() - start)


def bench_e(paths, loaded: LoadedModel) -> dict:
    """(e) Decode alone (threads on all cores), forward alone on pre-decoded batches."""
    start = time.perf_counter()
    with ThreadPoolExecutor(default_threads()) as pool:
        arrays = list(pool.map(lambda p: preprocess(p.read_bytes(), loaded.spec), paths))
    decode = rate(len(paths), time.perf_counter() - start)
    batch = default_batch_size(loaded.device)
    batches = [np.stack(arrays[i:i + batch]) for i in range(0, len(arrays), batch)]
    forward(loaded, batches[0])  # warm-up
    start = time.perf_counter()
    for b in batches:
        forward(loaded, b)
    fwd = rate(len(paths), time.perf_counter() - start)
    return {"decode": decode, "forward": fwd, "ceiling": round(1 / (1 / decode + 1 / fwd), 1)}


def bench_model(base: Path, store: str | None, photos: list[Path]) -> tuple[Registry, dict]:
    """The trained version at 224 px, as registered, else re-registered with benchmark photos."""
    # Trained at 224 px, its record is on its validation images, as a worker's version is.
    trained, source = trained_model(base, store)
    registry = Registry(LocalStore(base / "store"))
    if store is None and trained["preprocess"]["input_size"] == 224 and trained.get("precision"):
        return registry, trained
    version = f"bench-224-{trained['version']}"
    if version in {m["version"] for m in registry.versions()}:
        return registry, registry.manifest(version)
    spec = spec_for(224, 256)
    state = load_model(trained, source.weights(trained), torch.device("cpu")).state_dict()
    model = build_alexnet(len(trained["classes"])).eval()
    model.load_state_dict(state)
    sample = np.stack([preprocess(p.read_bytes(), spec) for p in photos])
    print(f"measuring reduced precisions against fp32 on {len(sample)} benchmark photos ...",
          flush=True)
    fields, files = record(model, spec, sample, generated_sample(spec, CALIBRATION_IMAGES, seed=1),
                           f"{len(sample)} benchmark photos")
    return registry, register_state(registry, state, trained["classes"], version=version,
                                    files=files, preprocess=spec, **fields)


def run(n: int, size: tuple[int, int], base: Path, precision: str, store: str | None,
        peer: bool) -> dict:
    """All the measurements on one folder of n photos of this size."""
    root = base / f"photos-{size[0]}x{size[1]}"
    paths = make_photos(root, n, size, unique=min(64, n, 48_000_000 // (size[0] * size[1])))
    agreement_photos = make_photos(base / "agreement-640x480", 128, (640, 480), unique=128, seed=2)
    registry, manifest = bench_model(base, store, agreement_photos)
    spec = manifest["preprocess"]
    device = torch.device("cpu")
    loaded = ModelCache(registry, device, "fp32", setting=precision,
                        batch_size=default_batch_size(device)).get(manifest["version"])
    plain = build_alexnet(len(manifest["classes"])).eval()
    plain.load_state_dict(load_model(manifest, registry.weights(manifest), device).state_dict())
    figures = {"n": n, "size": f"{size[0]}x{size[1]}", "precision": loaded.precision,
               "precision_reason": loaded.reason, "model": manifest["version"],
               "agreement": manifest["precision"]["variants"],
               "mean_file_kb": round(sum(p.stat().st_size for p in paths[:64]) / 64 / 1024)}
    figures["a_one_at_a_time"] = bench_a(paths[: max(40, n // 5)], plain, spec)
    figures["b_dataloader"] = bench_b(paths, plain, spec)
    figures["c_engine"] = bench_c(root, loaded)
    d = bench_d(root, n, base, {"store": str(base / "store"), "precision": precision,
                                "default_model": manifest["version"]})
    figures["d_system"], figures["d_precision"] = d["images_per_s"], d["precision"]
    figures["e"] = bench_e(paths, loaded)
    figures["f_ray_data"] = bench_f(root, plain.state_dict(), spec, n) if peer else "not run (--no-peer)"
    e, d = figures["e"]["ceiling"], figures["d_system"]
    figures["ratios"] = {"d_over_b": round(d / figures["b_dataloader"], 2),
                         "d_over_a": round(d / figures["a_one_at_a_time"], 2),
                         "c_over_ceiling": round(figures["c_engine"] / e, 2)}
    if isinstance(figures["f_ray_data"], float):
        figures["ratios"]["d_over_f"] = round(d / figures["f_ray_data"], 2)
    return figures


def bench_f(root: Path, state: dict, spec: dict, n: int) -> float | str:
    """(f) Ray Data, or why it could not run."""
    try:
        from bench.ray_peer import bench_f as ray_f
        return ray_f(root, state, spec, n)
    except ImportError as e:
        return f"not run: {e} (pip install .[bench])"


def table(figures: dict) -> str:
    """The five figures with ratios, as Markdown."""
    e = figures["e"]
    rows = [("(a) one at a time", figures["a_one_at_a_time"]),
            ("(b) Dataset + DataLoader(64, 2 workers)", figures["b_dataloader"]),
            ("(c) engine alone", figures["c_engine"]),
            ("(d) whole system (API -> Redis -> worker -> store)", figures["d_system"]),
            ("(e) decode alone", e["decode"]), ("(e) forward alone", e["forward"]),
            ("(e) ceiling for the same cores", e["ceiling"])]
    if isinstance(figures.get("f_ray_data"), float):
        rows.append(("(f) Ray Data batch inference", figures["f_ray_data"]))
    lines = [f"{figures['size']} JPEGs (~{figures['mean_file_kb']} KB), n={figures['n']}, "
             f"precision {figures['precision_reason']} (the job: {figures['d_precision']})", "",
             "| pipeline | images/s | x (b) |", "|---|---|---|"]
    lines += [f"| {name} | {v} | {v / figures['b_dataloader']:.2f} |" for name, v in rows]
    r = figures["ratios"]
    lines += ["", f"(d)/(b) = {r['d_over_b']}, (d)/(a) = {r['d_over_a']}, "
                  f"(c)/ceiling = {r['c_over_ceiling']}, (d)/(f) = {r.get('d_over_f')}"]
    if not isinstance(figures.get("f_ray_data"), float):
        lines.append(f"(f) {figures.get('f_ray_data')}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=400, help="images per folder (default 400)")
    p.add_argument("--sizes", default="1600x1200", help="comma-separated WxH (e.g. 1600x1200,"
                   "4000x3000)")
    p.add_argument("--precision", default="auto", help="engine precision (default auto)")
    p.add_argument("--memory", action="store_true", help="also RSS at 1k vs 10k images")
    p.add_argument("--dir", help="working folder (default: a temp folder); a model trained there "
                   "is kept for the next run")
    p.add_argument("--store", help="a store whose production version is the model (default: "
                   "one trained on synthetic faces)")
    p.add_argument("--no-peer", action="store_true", help="skip (f), Ray Data")
    p.add_argument("--faces", action="store_true", help="also images/s with faces on and off "
                   "at 640x480 and 1600x1200, and detection alone (bench.faces)")
    args = p.parse_args()
    OUT.mkdir(exist_ok=True)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="facesense-bench-"))
    result = {"machine": machine(), "runs": []}
    for size in args.sizes.split(","):
        w, h = map(int, size.split("x"))
        figures = run(args.n, (w, h), base, args.precision, args.store, not args.no_peer)
        result["runs"].append(figures)
        print(table(figures), "\n", flush=True)
    if args.faces:
        from bench.faces import scoring_rates
        from runtime.faces import FaceDetector, FaceOptions
        result["faces"] = scoring_rates(min(args.n, 64), FaceDetector("cpu"), FaceOptions())
        print(json.dumps(result["faces"], indent=2))
    if args.memory:
        result["memory"] = memory(base, args.precision)
        print(json.dumps(result["memory"], indent=2))
    path = OUT / f"throughput-{args.sizes.replace(',', '_')}{'-memory' if args.memory else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
