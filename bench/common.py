"""What the benchmarks share: where figures go, the machine they were measured on, rates and
peak memory, and the trained model they score with."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from facesense.registry import Registry
from facesense.storage import LocalStore
from runtime.preprocess import spec_for

OUT = Path(__file__).parent / "out"


def rate(n: int, seconds: float) -> float:
    """n items over seconds, as items per second to one decimal."""
    return round(n / seconds, 1)


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def machine() -> dict:
    """What the figures depend on: CPU model and its bf16 support, cores, torch, GPU."""
    cpu, flags = platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            cpu = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {"cpu": cpu, "cpu_bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
            "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def trained_model(base: Path, store: str | None) -> tuple[dict, Registry]:
    """The manifest of a trained production version: from --store, else trained here once."""
    registry = Registry(LocalStore(store or base / "store"))
    if store or registry.alias("production"):
        return registry.resolve("production"), registry
    from facesense.synthetic import make_dataset
    from facesense.trainparams import TrainParams
    from trainer.data import load_data
    from trainer.train import Start, fit, manifest_for, register
    faces = base / "faces"
    if not faces.is_dir():
        make_dataset(faces, per_class=250)
    params = TrainParams(image_size=224)  # the size the benchmarks serve at
    spec = spec_for(params.image_size, params.resize_size)
    print(f"training a model on {faces} (default params, 224 px) for the agreement check ...", flush=True)
    data = load_data(LocalStore(faces), val_split=params.val_split, seed=params.seed, spec=spec,
                     cache_dir=base / "cache", max_pixels=100_000_000)
    result = fit(data, params, spec, device=torch.device("cpu"), precision="fp32",
                 on_epoch=lambda row: print(f"  epoch {row['epoch']}: validation accuracy "
                                            f"{row['val_accuracy']:.3f}", flush=True))
    manifest = register(registry, result, manifest_for(result, data, params, spec, start=Start("alexnet"),
                                                       job_id=None, source=str(faces)), data)
    registry.promote(manifest["version"], "production", by="bench")
    return manifest, registry
