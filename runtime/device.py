"""Device and precision choice: where a model runs and at which precision, decided at start-up."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from functools import cache

import torch

from facesense.errors import FacesenseError

log = logging.getLogger(__name__)

# The one precision table: each name's autocast dtype (None: plain fp32). bf16-full (bf16 weights)
# and int8 (quantised) are serving variants (runtime.precision); training runs them as bf16, fp32.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
              "bf16-full": torch.bfloat16, "int8": None}
# A reduced precision is chosen only when at least this much faster than fp32 (auto's bf16 on
# CPU here, a serving variant in runtime.precision): a clear margin, so workers on one kind of
# machine don't split on timing noise.
MIN_SPEEDUP = 1.2


def autocast(device: torch.device, precision: str):
    """The autocast context for a precision on a device (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def resolve_device(setting: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resolve_precision(setting: str, device: torch.device, cpu_bf16: bool | None = None,
                      timings: Callable[[], dict[str, float]] | None = None) -> str:
    """'auto': bf16 (or fp16) on CUDA; bf16 on CPUs with native bf16 if measured faster; else fp32."""
    if setting != "auto":
        if setting not in PRECISIONS:
            raise FacesenseError(f"unknown precision {setting!r}: use auto, "
                                 f"{', '.join(PRECISIONS)}")
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if not (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16):
        return "fp32"  # emulated bf16 runs AlexNet several times slower than fp32
    seconds = (timings or time_cpu_precisions)()
    return "bf16" if seconds["bf16"] * MIN_SPEEDUP < seconds["fp32"] else "fp32"


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 math (AVX-512 BF16 or AMX tiles)."""
    try:
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # a torch without these probes: assume not
        return False


@cache
def time_cpu_precisions(batch: int = 16, repeats: int = 3) -> dict[str, float]:
    """Median seconds of an AlexNet forward pass at 224 px per precision (once per process)."""
    from runtime.network import build_alexnet
    model = build_alexnet(2).eval().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    device, seconds = torch.device("cpu"), {}
    for precision in ("fp32", "bf16"):
        runs = []
        with torch.inference_mode(), autocast(device, precision):
            model(x)  # warm-up: oneDNN picks and caches its kernels
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                runs.append(time.perf_counter() - start)
        seconds[precision] = sorted(runs)[len(runs) // 2]
    log.info("CPU forward pass at batch %d: %s", batch, seconds)
    return seconds


def default_batch_size(device: torch.device) -> int:
    """A batch that keeps each device busy without wasting memory."""
    return 256 if device.type == "cuda" else 64


def default_threads() -> int:
    """Decode threads: a few more than cores, since fetches wait on I/O."""
    return (os.cpu_count() or 2) + 2
