"""Batched JPEG decoding on the GPU (nvJPEG through torchvision), and when to use it."""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from facesense.synthetic import draw_face
from runtime.preprocess import preprocess, spec_for

log = logging.getLogger(__name__)

DECODERS = ("auto", "cpu", "gpu")
JPEG_MAGIC = b"\xff\xd8\xff"


def gpu_decode_available(device: torch.device) -> bool:
    """True if torchvision can decode JPEGs on this CUDA device."""
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg

        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 100, 50)).save(buf, "JPEG")
        tiny = buf.getvalue()
        decode_jpeg([torch.frombuffer(bytearray(tiny), dtype=torch.uint8)], device=device)
        return True
    except Exception as e:  # no nvJPEG in this build, driver trouble: the CPU path it is
        log.info("GPU JPEG decoding unavailable: %s", e)
        return False


def choose_decoder(setting: str, device: torch.device, available: bool,
                   timings: dict[str, float] | None = None) -> str:
    """'cpu' or 'gpu': gpu only on CUDA with nvJPEG, and under 'auto' only if measured faster."""
    if setting not in DECODERS:
        raise ValueError(f"unknown decoder {setting!r}: use auto, cpu or gpu")
    if setting == "cpu" or device.type != "cuda" or not available:
        if setting == "gpu":
            log.warning("GPU decoding asked for but unavailable on %s; decoding on CPU", device)
        return "cpu"
    if setting == "gpu":
        return "gpu"
    if timings and timings.get("gpu", float("inf")) < timings.get("cpu", float("inf")):
        return "gpu"
    return "cpu" if timings else "gpu"


def time_decoders(samples: list[bytes], cpu_decode: Callable[[bytes], object],
                  gpu_decode: Callable[[list[bytes]], object]) -> dict[str, float]:
    """Seconds per image for each path on sample images (run once, on the first batch)."""
    start = time.perf_counter()
    for data in samples:
        cpu_decode(data)
    cpu = (time.perf_counter() - start) / len(samples)
    gpu_decode(samples)  # warm-up: nvJPEG handles, CUDA kernels
    torch.cuda.synchronize()
    start = time.perf_counter()
    gpu_decode(samples)
    torch.cuda.synchronize()
    return {"cpu": cpu, "gpu": (time.perf_counter() - start) / len(samples)}


GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def decode_batch_gpu(datas: list[bytes], spec: dict, device: torch.device) -> torch.Tensor:
    """JPEG bytes -> (N, size, size, 3) uint8 on device: decode, resize shorter side, centre crop.

    Same geometry as runtime.preprocess.preprocess (antialiased bilinear), done on the GPU.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    size, resize = spec["input_size"], spec["resize_size"]
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device,
                         apply_exif_orientation=True)
    out = torch.empty((len(images), size, size, 3), dtype=torch.uint8, device=device)
    for i, img in enumerate(images):  # (3, H, W) uint8
        h, w = img.shape[1:]
        scale = resize / min(h, w)
        crop = min(round(size / scale), h, w)
        top, left = (h - crop) // 2, (w - crop) // 2
        region = img[:, top:top + crop, left:left + crop].unsqueeze(0).float()
        resized = F.interpolate(region, size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False)
        if spec.get("grayscale"):  # ITU-R 601 luma in every channel, as preprocess.fit does
            resized = (resized * GREY.to(device)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        out[i] = resized[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    return out


def is_jpeg(data: bytes) -> bool:
    """True for JPEG bytes (by magic number, not by file name)."""
    return data[:3] == JPEG_MAGIC


def calibrate(device: torch.device, n: int = 16) -> dict[str, float]:
    """Time both paths on synthetic 2 MP photo-like JPEGs, at ImageNet preprocessing."""
    rng, spec, samples = random.Random(0), spec_for(224, 256), []
    for _ in range(n):
        buf = io.BytesIO()
        draw_face(rng, True, size=1200).resize((1600, 1200)).convert("RGB").save(buf, "JPEG",
                                                                               quality=90)
        samples.append(buf.getvalue())
    return time_decoders(samples, lambda d: preprocess(d, spec),
                         lambda ds: decode_batch_gpu(ds, spec, device))


def resolve_decoder(setting: str, device: torch.device) -> str:
    """The decoder a worker uses: the setting, checked against what this device can do."""
    available = gpu_decode_available(device)
    timings = calibrate(device) if setting == "auto" and available else None
    choice = choose_decoder(setting, device, available, timings)
    log.info("decoding on %s (setting %s, timings %s)", choice, setting, timings)
    return choice
