"""The GPU check's benchmarks, stage by stage: model, precision, decode, forward, engine, system.

Each function measures one stage on the device it is given (CUDA on a lent machine, the CPU in
the dry run) and returns plain figures; bench.gpu_check runs them in order and judges targets.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.photos import make_photos
from facesense.registry import Registry
from facesense.storage import LocalStore
from runtime.device import default_threads
from runtime.gpu_decode import calibrate, choose_decoder, decode_batch_gpu, gpu_decode_available
from runtime.precision import run, variant
from runtime.preprocess import normalize, preprocess, spec_for
from runtime.serving import LoadedModel, forward
from worker.inference import score
from worker.model_cache import ModelCache

NO_CUDA = "not run: CUDA not available"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA is asynchronous; the CPU is not)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def photos(base: Path, n: int, unique: int = 64) -> list[Path]:
    """n 2 MP JPEGs (1600x1200, about 1 MB), `unique` of them distinct, the rest hard links."""
    return make_photos(base / f"photos-{n}", n, (1600, 1200), unique=min(unique, n))


def photo_folder(base: Path, n: int) -> Path:
    """The folder of photos(base, n), made if needed: a job's source, the engine's store."""
    photos(base, n)
    return base / f"photos-{n}"


def model(base: Path, device: torch.device, per_class: int, epochs: int) -> tuple[Registry, dict]:
    """The production version of base/store, made (trained, or random with epochs 0) once."""
    registry = Registry(LocalStore(base / "store"))
    if registry.alias("production"):
        return registry, registry.resolve("production")
    manifest = trained(base, registry, device, per_class, epochs) if epochs else untrained(registry)
    registry.promote(manifest["version"], "production", by="gpu-check")
    return registry, manifest


def trained(base: Path, registry: Registry, device: torch.device, per_class: int,
            epochs: int) -> dict:
    """AlexNet at 224 px on synthetic faces through the training pipeline, as a job trains it."""
    from facesense.settings import Settings
    from facesense.synthetic import make_dataset
    from facesense.trainparams import TrainParams
    from trainer.pipeline import train_version

    faces = base / "faces"
    make_dataset(faces, per_class=per_class)
    params = TrainParams.parse({"image_size": 224, "epochs": epochs, "batch_size": 64})
    return train_version(LocalStore(faces), str(faces), params,
                         settings=Settings(data_dir=str(base / "var")), registry=registry,
                         device=device, precision="bf16" if device.type == "cuda" else "fp32",
                         threads=default_threads()).manifest


def untrained(registry: Registry) -> dict:
    """A seeded random 2-class AlexNet at 224 px, registered with its agreement (speed only)."""
    from runtime.network import build_alexnet, register_state
    from runtime.precision import CALIBRATION, calibration_file, generated_sample, measure

    torch.manual_seed(0)
    net, spec = build_alexnet(2).eval(), spec_for(224, 256)
    calibration = generated_sample(spec, 4, seed=1)
    record = measure(net, spec, generated_sample(spec, 8, seed=2), calibration,
                     "8 generated photos (an untrained model: speed only)",
                     precisions=("bf16", "bf16-full", "fp16"))  # int8 (CPU only) costs seconds
    return register_state(registry, net.state_dict(), ["happy", "sad"], precision=record,
                          files={CALIBRATION: calibration_file(calibration)}, preprocess=spec,
                          source="gpu-check: random init")


def loaded_model(registry: Registry, version: str, device: torch.device, batch: int) -> LoadedModel:
    """The version as a worker serves it here (precision auto: measured, per its record)."""
    return ModelCache(registry, device, "fp32", setting="auto", batch_size=batch).get(version)


def precision(base: Path, n: int, big_batch: int, device: torch.device) -> dict:
    """bench.precision on the production version (torch.compile only off the dry run's CPU)."""
    from bench.precision import measure
    return measure(n, base, str(base / "store"), big_batch, compiled=device.type == "cuda")


def model_only(loaded: LoadedModel, batch: int, repeats: int = 20) -> dict:
    """bf16 (autocast) and bf16-full forward passes alone, on a batch already on the GPU."""
    if loaded.device.type != "cuda":
        return {"batch": batch, "note": NO_CUDA}
    x = normalize(torch.randint(0, 256, (batch, 224, 224, 3), dtype=torch.uint8), loaded.spec,
                  loaded.device)
    out = {"batch": batch}
    for name in ("bf16", "bf16-full"):
        module = variant(loaded.model, name)
        run(module, name, x)  # warm-up: cuDNN picks its kernels for this shape
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run(module, name, x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        out[name] = round(batch / sorted(times)[len(times) // 2], 1)
    return out


def decode(paths: list[Path], device: torch.device, threads: int, batch: int) -> dict:
    """CPU decode on every core against nvJPEG, their pixel differences, and `auto`'s choice."""
    spec, datas = spec_for(224, 256), [p.read_bytes() for p in paths]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        arrays = list(pool.map(lambda d: preprocess(d, spec), datas))
    out = {"images": len(datas), "cpu_threads": threads,
           "cpu_images_per_s": round(len(datas) / (time.perf_counter() - start), 1)}
    if device.type != "cuda":
        return {**out, "gpu": NO_CUDA}
    decode_batch_gpu(datas[:batch], spec, device)  # warm-up: nvJPEG handles, kernels
    sync(device)
    start, decoded = time.perf_counter(), []
    for i in range(0, len(datas), batch):
        decoded.append(decode_batch_gpu(datas[i:i + batch], spec, device))
    sync(device)
    out["gpu_images_per_s"] = round(len(datas) / (time.perf_counter() - start), 1)
    gpu = torch.cat(decoded)[:64].cpu().numpy().astype(np.int16)
    diff = np.abs(gpu - np.stack(arrays[:64]).astype(np.int16))
    out["gpu_vs_cpu_pixels"] = {"mean_abs": round(float(diff.mean()), 3), "max_abs": int(diff.max()),
                                "within_2": round(float((diff <= 2).mean()), 4)}
    available = gpu_decode_available(device)
    timings = calibrate(device) if available else None
    out["auto"] = {"available": available, "calibration_s_per_image": timings,
                   "choice": choose_decoder("auto", device, available, timings)}
    return out


def forward_rates(loaded: LoadedModel, paths: list[Path], batch: int, seconds: float) -> dict:
    """The engine's forward pass alone, from host memory (CPU decode) and device (nvJPEG)."""
    arrays = [preprocess(p.read_bytes(), loaded.spec) for p in paths[:batch]]
    host = np.stack(arrays)
    out = {"batch": batch, "precision": loaded.precision, "reason": loaded.reason}
    sources = {"from_host": host}
    if loaded.device.type == "cuda":
        sources["from_device"] = torch.from_numpy(host).to(loaded.device)
    for name, x in sources.items():
        forward(loaded, x)  # warm-up
        sync(loaded.device)
        repeats, start = 0, time.perf_counter()
        while repeats < 3 or time.perf_counter() - start < seconds:
            forward(loaded, x)  # returns probabilities on the host: each pass is synchronised
            repeats += 1
        out[name] = round(repeats * batch / (time.perf_counter() - start), 1)
    return out


def engine(root: Path, loaded: LoadedModel, decoders: list[str], threads: int, batch: int) -> dict:
    """(c) worker.inference.score over the folder with each decoder, images/s."""
    store = LocalStore(root)
    keys = sorted(store.list())
    out = {"images": len(keys), "threads": threads}
    for decoder in decoders:
        start = time.perf_counter()
        rows = sum(1 for r in score(keys, loaded, lambda k, _limit: store.get(k),
                                    batch_size=batch, threads=threads,
                                    max_pixels=10**9, max_bytes=1 << 30, decoder=decoder)
                   if r["error"] is None)
        assert rows == len(keys), f"{len(keys) - rows} images failed with decoder {decoder}"
        out[decoder] = round(len(keys) / (time.perf_counter() - start), 1)
    return out


def system(root: Path, n: int, base: Path, version: str, batch: int) -> dict:
    """(d) API -> Redis -> one worker on this machine's device -> local store (bench.system)."""
    from bench.system import bench_d
    return bench_d(root, n, base, {"store": str(base / "store"), "precision": "auto",
                                   "default_model": version, "device": "auto", "decoder": "auto",
                                   "decode_threads": os.cpu_count() or 2, "batch_size": batch})
