"""Reduced precision against fp32: forward images/s and agreement on the benchmark images.

`python -m bench.precision [--n 256] [--store DIR]` measures, for each variant this device can
run (runtime.precision's: fp32, bf16 autocast, bf16 weights, fp16 on CUDA, int8 on CPU, plus
fp32 through oneDNN fusion, torch.jit.freeze + optimize_for_inference, as a candidate the engine
does not offer; on CPU also torch.compile, with and without freezing, beside eager fp32), the
model-only forward rate at the engine's batch size (and at --big-batch on CUDA), and against
fp32 on the same images: the share of equal labels and the largest probability
difference. A precision may be chosen only where it is 1.2x faster and agrees on >= 99.5 % of
labels with every probability within 0.01 (see `eligible`; the engine's rule, runtime.precision).

Agreement needs a trained model: the production version of --store (e.g. var/demo/stack/store
after `make demo`), else one trained here on synthetic faces with the default training params
at 224 px (about 6 minutes on 2 CPU cores; kept in --dir for the next run). Speed is measured at
the throughput benchmark's 224 px input. Agreement here is on the benchmark photos, which are
not faces; the record the version was registered with (on its validation images, the one a
worker decides by) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.common import OUT, machine, trained_model
from bench.photos import make_photos
from runtime.device import MIN_SPEEDUP, default_batch_size
from runtime.network import load_model
from runtime.precision import MAX_PROB_DIFF, MIN_LABEL_AGREEMENT, variant
from runtime.preprocess import preprocess, spec_for
from runtime.serving import LoadedModel, forward


def agreement(reference: np.ndarray, probs: np.ndarray) -> dict:
    """Label agreement and probability differences of probs against the fp32 reference."""
    diff = np.abs(probs.astype(np.float64) - reference)
    return {"label_agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
            "max_prob_diff": float(diff.max()), "mean_prob_diff": float(diff.mean())}


def eligible(figures: dict, fp32_rate: float) -> bool:
    """Whether a precision may be chosen: MIN_SPEEDUP x fp32 and agreeing closely enough."""
    return (figures["images_per_s"] >= MIN_SPEEDUP * fp32_rate and
            figures["label_agreement"] >= MIN_LABEL_AGREEMENT and
            figures["max_prob_diff"] <= MAX_PROB_DIFF)


def run_batches(fn, batches: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """fn over every batch after one warm-up call: (stacked outputs, images/s)."""
    fn(batches[0])
    start = time.perf_counter()
    out = [fn(b) for b in batches]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    n = sum(len(b) for b in batches)
    return np.concatenate(out), n / (time.perf_counter() - start)


def precisions_for(device: torch.device) -> list[str]:
    """What this device can run: the engine's variants, plus oneDNN fusion on CPU."""
    if device.type == "cuda":
        return ["fp32", "bf16", "bf16-full", "fp16"]
    return ["fp32", "fp32-jit", "bf16", "bf16-full", "int8"]


def measure(n: int, base: Path, store: str | None, big_batch: int, compiled: bool = True) -> dict:
    """Speed (224 px) and agreement (the model's own preprocessing) for every precision
    (compiled: on CPU also torch.compile, about a minute; the GPU check's dry run skips it)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    manifest, registry = trained_model(base, store)
    model = load_model(manifest, registry.weights(manifest), device)
    paths = make_photos(base / "photos-1600x1200", n, (1600, 1200), unique=n)
    calibration = make_photos(base / "calibration", 16, (1600, 1200), unique=16, seed=1)
    batch = default_batch_size(device)
    specs = {"speed": spec_for(224, 256), "agreement": manifest["preprocess"]}
    batches = {view: batched([preprocess(p.read_bytes(), spec) for p in paths], batch)
               for view, spec in specs.items()}
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "model": manifest["version"], "images": n, "batch": batch, "precisions": {},
               "registered_agreement": (manifest.get("precision") or {}).get("variants")}
    reference = None
    for name in precisions_for(device):
        run = runner(name, model, specs["agreement"], device, calibration)  # built once
        rate = run_batches(partial(run, spec=specs["speed"]), batches["speed"])[1]
        probs = run_batches(partial(run, spec=specs["agreement"]), batches["agreement"])[0]
        reference = probs.astype(np.float64) if reference is None else reference  # fp32 first
        results["precisions"][name] = {"images_per_s": rate, **agreement(reference, probs)}
        print(f"  {name}: {rounded(results['precisions'][name])}", flush=True)
    judge(results["precisions"])
    if device.type == "cuda" and big_batch:
        results[f"bf16_model_only_batch_{big_batch}"] = model_only_rate(model, device, big_batch)
    if device.type == "cpu" and compiled:
        results["fp32_torch_compile"] = compiled_rate(model, batch)
        print(f"  torch.compile: {results['fp32_torch_compile']}", flush=True)
    return results


def judge(precisions: dict) -> None:
    """Add each precision's speed-up over fp32 and whether it may be the default, then round."""
    fp32 = precisions["fp32"]["images_per_s"]
    for name, figures in precisions.items():
        figures["x_fp32"] = figures["images_per_s"] / fp32
        figures["eligible_as_default"] = None if name == "fp32" else eligible(figures, fp32)
        figures.update(rounded(figures))


def rounded(figures: dict) -> dict:
    """Figures rounded for reading (decisions use the unrounded ones)."""
    places = {"images_per_s": 1, "x_fp32": 2, "label_agreement": 4, "max_prob_diff": 4,
              "mean_prob_diff": 5}
    return {k: round(v, places[k]) if k in places else v for k, v in figures.items()}


def compiled_rate(model: torch.nn.Module, batch: int) -> dict:
    """fp32 torch.compile (Inductor), with and without freezing, beside eager at 224 px."""
    import torch._inductor.config as inductor

    x = torch.rand(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)

    def rate(module) -> float:
        with torch.inference_mode():
            module(x)
            start = time.perf_counter()
            for _ in range(3):
                module(x)
        return round(3 * batch / (time.perf_counter() - start), 1)

    out = {}
    with torch.inference_mode():
        eager = model(x)
    try:
        for name, freezing in (("compile", False), ("compile_freezing", True)):
            torch._dynamo.reset()
            inductor.freezing = freezing  # constant-folds weights, pre-packs them for oneDNN
            compiled = torch.compile(model)
            start = time.perf_counter()  # compiling: once per process and input shape
            with torch.inference_mode():
                logits = compiled(x)
            out[f"{name}_startup_s"] = round(time.perf_counter() - start, 1)
            out[f"{name}_max_logit_diff"] = float((logits - eager).abs().max())
            out[f"{name}_images_per_s"], out[f"eager_beside_{name}"] = rate(compiled), rate(model)
    finally:
        inductor.freezing = False
    return out


def model_only_rate(model: torch.nn.Module, device: torch.device, batch: int) -> float:
    """bf16 forward passes alone on a batch already on the GPU, in images/s."""
    x = torch.rand(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            model(x)
        torch.cuda.synchronize()
    return round(10 * batch / (time.perf_counter() - start), 1)


def batched(arrays: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Consecutive stacked batches of at most size arrays."""
    return [np.stack(arrays[i:i + size]) for i in range(0, len(arrays), size)]


def runner(name: str, model, calibration_spec: dict, device: torch.device,
           calibration_paths: list[Path]):
    """fn(uint8 batch, spec) -> probabilities for one variant, through the engine's forward."""
    if name == "fp32-jit":  # oneDNN fusion: conv + relu fused, weights pre-packed
        traced = {}  # a trace is shape-specialised (adaptive pooling): one per input side

        def run(b: np.ndarray, spec: dict) -> np.ndarray:
            side = spec["input_size"]
            if side not in traced:
                example = torch.rand(1, 3, side, side).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    traced[side] = torch.jit.optimize_for_inference(torch.jit.freeze(
                        torch.jit.trace(model, example).eval()))
            try:
                return forward(LoadedModel("bench", [], spec, traced[side], device, "fp32"), b)
            except RuntimeError:  # oneDNN's pooling refuses to upsample (inputs < 224 px): eager
                traced[side] = model  # fp32 either way, so the agreement is unaffected
                return forward(LoadedModel("bench", [], spec, model, device, "fp32"), b)
        return run
    calibration = np.stack([preprocess(p.read_bytes(), calibration_spec)
                            for p in calibration_paths]) if name == "int8" else None
    module = variant(model, name, calibration, calibration_spec)
    return lambda b, spec: forward(LoadedModel("bench", [], spec, module, device, name), b)


def table(results: dict) -> str:
    """The figures as Markdown."""
    lines = [f"{results['device']}, {results['images']} benchmark images (1600x1200), batch "
             f"{results['batch']}, model {results['model']}", "",
             "| precision | forward images/s (224 px) | x fp32 | labels equal | max abs diff p "
             "| mean abs diff p | eligible on these images | as registered (validation images) |",
             "|---|---|---|---|---|---|---|---|"]
    registered = results.get("registered_agreement") or {}
    for name, f in results["precisions"].items():
        verdict = "reference" if name == "fp32" else "yes" if f["eligible_as_default"] else "no"
        rec = registered.get(name)
        lines.append(f"| {name} | {f['images_per_s']} | {f['x_fp32']} | "
                     f"{f['label_agreement'] * 100:.1f} % | {f['max_prob_diff']} | "
                     f"{f['mean_prob_diff']} | {verdict} | "
                     + (f"{rec['label_agreement'] * 100:.1f} %, max {rec['max_prob_diff']}, "
                        f"{'agrees' if rec['agrees'] else 'does not agree'} |" if rec else "- |"))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="distinct benchmark images (default 256)")
    p.add_argument("--store", help="a model store whose production version is checked")
    p.add_argument("--big-batch", type=int, default=1024,
                   help="CUDA: also the model-only bf16 rate at this batch (default 1024)")
    p.add_argument("--dir", help="working folder (default: a temp folder)")
    args = p.parse_args()
    torch.manual_seed(0)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="facesense-precision-"))
    base.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), **measure(args.n, base, args.store, args.big_batch)}
    print(table(results))
    OUT.mkdir(exist_ok=True)
    path = OUT / f"precision-{'cuda' if torch.cuda.is_available() else 'cpu'}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
