"""Reduced-precision variants of a model version, and how closely each agrees with fp32.

A version's manifest records, under "precision", each variant's agreement with fp32 on the
version's own images (measured once, when it is registered); a worker runs a variant only where
that record says it agrees and a start-up measurement finds it faster (runtime.device.choose).
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import random
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from facesense.errors import FacesenseError
from facesense.synthetic import draw_photo
from runtime.architectures import ARCHITECTURES
from runtime.device import MIN_SPEEDUP, PRECISIONS, autocast, cpu_has_bf16
from runtime.preprocess import normalize, preprocess

log = logging.getLogger(__name__)

REDUCED = ("bf16", "bf16-full", "fp16", "int8")  # every variant offered besides fp32
MIN_LABEL_AGREEMENT = 0.995  # share of labels equal to fp32's
MAX_PROB_DIFF = 0.01  # largest |p - p_fp32| over every image and class
CALIBRATION = "int8-calibration.npy"  # the version's file of int8 calibration images
CALIBRATION_IMAGES = 16
# Every architecture's head stays fp32 (its logits decide the labels); a name a network lacks
# is simply not matched.
INT8_FLOAT = tuple(name for arch in ARCHITECTURES.values() for name in arch.int8_float)


def variant(model: torch.nn.Module, precision: str,
            calibration: np.ndarray | None = None, spec: dict | None = None) -> torch.nn.Module:
    """The module to run for a precision (int8 needs the calibration images and their spec)."""
    if precision == "bf16-full":  # weights and activations in bf16: no casts between layers
        return copy.deepcopy(model).to(torch.bfloat16)
    if precision == "int8":
        if calibration is None or spec is None:
            raise ValueError("int8 needs calibration images and their preprocessing spec")
        return quantize_int8(model, normalize(torch.as_tensor(calibration), spec,
                                              torch.device("cpu")))
    return model  # fp32, and the autocast precisions (bf16, fp16) run the fp32 weights


def quantize_int8(model: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    """Static int8 (x86 backend: per-channel weights) with an fp32 head, calibrated on a batch."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "x86"
    mapping = get_default_qconfig_mapping("x86")
    for name in INT8_FLOAT:
        mapping.set_module_name(name, None)
    with warnings.catch_warnings():  # torch.ao's FX quantisation warns that it is deprecated
        warnings.simplefilter("ignore")
        plain = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format)
        prepared = prepare_fx(plain.eval(), mapping, (calibration[:1],))
        with torch.inference_mode():
            prepared(calibration)
        return convert_fx(prepared)


def run(module: torch.nn.Module, precision: str, x: torch.Tensor) -> torch.Tensor:
    """Float32 logits of a normalised float batch through a variant's module."""
    if precision == "bf16-full":
        x = x.to(torch.bfloat16)
    with torch.inference_mode(), autocast(x.device, precision):
        return module(x).float()


def probabilities(module: torch.nn.Module, precision: str, images: np.ndarray, spec: dict,
                  batch: int = 64) -> np.ndarray:
    """Class probabilities of uint8 NHWC images (on the CPU) through a variant."""
    out = [torch.softmax(run(module, precision, normalize(torch.as_tensor(images[i:i + batch]),
                                                          spec, torch.device("cpu"))), 1)
           for i in range(0, len(images), batch)]
    return torch.cat(out).double().numpy()


def agreement(reference: np.ndarray, probs: np.ndarray) -> dict:
    """Label agreement and probability differences against fp32, and whether they pass."""
    diff = np.abs(probs - reference)
    labels = float((probs.argmax(1) == reference.argmax(1)).mean())
    return {"label_agreement": round(labels, 4), "max_prob_diff": round(float(diff.max()), 5),
            "agrees": labels >= MIN_LABEL_AGREEMENT and float(diff.max()) <= MAX_PROB_DIFF}


def measure(model: torch.nn.Module, spec: dict, images: np.ndarray, calibration: np.ndarray,
            sample: str, precisions: tuple[str, ...] = REDUCED) -> dict:
    """The manifest's "precision" record: every variant against fp32 on images (uint8 NHWC)."""
    model = model.float().cpu().eval()
    reference = probabilities(model, "fp32", images, spec)
    record = {"sample": sample, "images": len(images), "measured_at": round(time.time(), 3),
              "bar": {"label_agreement": MIN_LABEL_AGREEMENT, "max_prob_diff": MAX_PROB_DIFF},
              "calibration_sha256": digest(calibration), "variants": {}}
    for name in precisions:
        module = variant(model, name, calibration, spec)
        record["variants"][name] = agreement(reference, probabilities(module, name, images, spec))
    return record


def record(model: torch.nn.Module, spec: dict, images: np.ndarray, calibration: np.ndarray,
           sample: str) -> tuple[dict, dict[str, bytes]]:
    """The manifest fields and version files that record a model's agreement with fp32."""
    return ({"precision": measure(model, spec, images, calibration, sample)},
            {CALIBRATION: calibration_file(calibration)})


def generated_sample(spec: dict, n: int, seed: int = 0) -> np.ndarray:
    """n photo-like 640x480 JPEGs, preprocessed: an import's sample when none is supplied."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        buf = io.BytesIO()
        draw_photo(rng, (640, 480)).save(buf, "JPEG", quality=90)
        out.append(preprocess(buf.getvalue(), spec))
    return np.stack(out)


def agrees(manifest: dict, precision: str) -> bool:
    """Whether the manifest records that a variant agrees with fp32."""
    record = (manifest.get("precision") or {}).get("variants", {}).get(precision) or {}
    return bool(record.get("agrees"))


def digest(images: np.ndarray) -> str:
    """sha256 of a uint8 array: a worker checks it runs int8 with the calibration measured."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def calibration_file(images: np.ndarray) -> bytes:
    """Calibration images as .npy bytes (no pickle), stored beside the version's weights."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def read_calibration(data: bytes) -> np.ndarray:
    """The calibration images back from a version's file."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def choose(setting: str, device: torch.device, manifest: dict,
           timings: Callable[[tuple[str, ...]], dict[str, float]],
           cpu_bf16: bool | None = None) -> tuple[str, str]:
    """(precision, why) for serving a version: a forced setting, or under 'auto' the fastest
    variant the manifest says agrees, if timings (seconds a batch) find it MIN_SPEEDUP x fp32."""
    if setting != "auto":
        if setting not in PRECISIONS:
            raise FacesenseError(f"unknown precision {setting!r}: use auto, {', '.join(PRECISIONS)}")
        if setting == "int8" and device.type != "cpu":
            raise FacesenseError("FACESENSE_PRECISION=int8 runs on the CPU only")
        return setting, f"{setting}: set by FACESENSE_PRECISION"
    native = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
    offered = runnable(device, native)
    candidates = tuple(p for p in offered if agrees(manifest, p))
    if not candidates:
        return "fp32", "fp32: " + why_none(manifest, device, native, offered)
    seconds = timings(("fp32", *candidates))
    best = min(candidates, key=seconds.__getitem__)
    speedup = seconds["fp32"] / seconds[best]
    if speedup >= MIN_SPEEDUP:
        return best, f"{best}: agrees, {speedup:.1f}x faster"
    return "fp32", f"fp32: {best} agrees but is only {speedup:.2f}x faster"


def runnable(device: torch.device, cpu_bf16: bool) -> tuple[str, ...]:
    """The variants worth timing on a device (emulated bf16 runs AlexNet ~6x slower than fp32)."""
    if device.type == "cuda":
        return ("bf16", "bf16-full", "fp16") if torch.cuda.is_bf16_supported() else ("fp16",)
    return ("bf16", "bf16-full", "int8") if cpu_bf16 else ("int8",)


def why_none(manifest: dict, device: torch.device, cpu_bf16: bool, offered: tuple[str, ...]) -> str:
    """Why no reduced precision is a candidate, in a few words."""
    if not (manifest.get("precision") or {}).get("variants"):
        return "the version records no agreement with fp32"
    reasons = ["no native bf16"] if device.type == "cpu" and not cpu_bf16 else []
    return ", ".join(reasons + [f"{p} does not agree" for p in offered])


_timed: dict[tuple, dict[str, float]] = {}


def time_variants(modules: dict[str, torch.nn.Module], spec: dict, batch: int,
                  device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Median seconds of one batch per variant at this batch and input size (kept per process:
    the speed depends on the shapes, not on a version's weights)."""
    size = spec["input_size"]
    key = (tuple(modules), size, batch, str(device))
    if key not in _timed:
        x = normalize(torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8), spec, device)
        seconds = {}
        for name, module in modules.items():
            run(module, name, x)  # warm-up: oneDNN picks and caches its kernels
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                run(module, name, x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                runs.append(time.perf_counter() - start)
            seconds[name] = sorted(runs)[len(runs) // 2]
        log.info("forward pass at batch %d, %d px: %s", batch, size, seconds)
        _timed[key] = seconds
    return _timed[key]
