"""The batched inference engine: fetch + decode in threads, batch, forward, rows out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from itertools import islice

import numpy as np
import torch

from facesense.errors import FacesenseError, ObjectNotFound, TransientError
from facesense.netguard import FetchError
from facesense.sources import group_of
from facesense.store import TooLarge
from facesense.thumbnails import ThumbnailWriter
from trainer.presets import ImageRejected, normalize, open_image, plain_jpeg, preprocess
from worker import metrics
from worker.gpu_decode import decode_batch_gpu, is_jpeg

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_MARGIN = 1.2  # auto picks bf16 on CPU only if at least this much faster than fp32


@dataclass
class LoadedModel:
    """A model version ready to run: the network plus what its manifest says about inputs."""

    version: str
    classes: list[str]
    spec: dict  # preprocessing: input_size, resize_size, mean, std
    model: torch.nn.Module
    device: torch.device
    precision: str  # fp32, bf16 or fp16


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
            raise FacesenseError(f"unknown precision {setting!r}: use auto, fp32, bf16 or fp16")
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if not (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16):
        return "fp32"  # emulated bf16 runs AlexNet several times slower than fp32
    seconds = (timings or time_cpu_precisions)()
    # A clear margin, so workers on the same kind of machine don't split on timing noise.
    return "bf16" if seconds["bf16"] * BF16_MARGIN < seconds["fp32"] else "fp32"


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 math (AVX-512 BF16 or AMX tiles)."""
    try:
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # a torch without these probes: assume not
        return False


@cache
def time_cpu_precisions(batch: int = 16, repeats: int = 3) -> dict[str, float]:
    """Median seconds of an AlexNet forward pass at 224 px per precision (once per process)."""
    from trainer.model import build_alexnet
    model = build_alexnet(2).eval().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    seconds = {}
    for precision in ("fp32", "bf16"):
        dtype, runs = PRECISIONS[precision], []
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
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


def forward(loaded: LoadedModel, batch: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 NHWC batch (CPU array, or tensor already on the device) -> class probabilities."""
    x = normalize(torch.as_tensor(batch), loaded.spec, loaded.device)
    dtype = PRECISIONS[loaded.precision]
    with torch.inference_mode(), torch.autocast(loaded.device.type, dtype=dtype,
                                                enabled=dtype is not None):
        logits = loaded.model(x)
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


class Jpeg(bytes):
    """JPEG bytes whose header passed the checks, left for the GPU to decode with its batch."""


def score(keys: Iterable[str], loaded: LoadedModel, fetch: Callable[[str, int], bytes], *,
          batch_size: int, threads: int, max_pixels: int, max_bytes: int,
          should_stop: Callable[[], bool] = lambda: False, decoder: str = "cpu",
          thumbs: ThumbnailWriter | None = None) -> Iterator[dict]:
    """One result row per key, in order; decoding of batch k+1 overlaps the forward of batch k.

    fetch(key, max_bytes) returns an image's bytes (e.g. functools.partial(read_limited, store)).
    decoder 'gpu' leaves JPEGs to nvJPEG on the device, in batches (see worker.gpu_decode).
    Stops early (fewer rows than keys) when should_stop() turns true between batches.
    thumbs gets each decoded image for the gallery, and is closed (flushed) at the end.
    """
    def load(key: str):
        try:
            data = fetch(key, max_bytes)  # stops reading past the limit: memory stays bounded
            if decoder == "gpu" and is_jpeg(data):
                img = open_image(data, max_pixels=max_pixels)  # header only: the pixel limit
                if plain_jpeg(img, data):  # CMYK, truncated: the CPU path gets them right
                    return Jpeg(data)
            return preprocess(data, loaded.spec, max_pixels=max_pixels,
                              on_decoded=thumbs and partial(thumbs.add, key))
        except (ImageRejected, TooLarge, FetchError) as e:  # FetchError: a URL item's reason
            return str(e)
        except ObjectNotFound:
            return "image not found in the source"

    keys = iter(keys)
    with (ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool, _closing(thumbs),
          metrics.shard_meter()):
        def submit() -> list[tuple[str, Future]]:
            return [(k, pool.submit(load, k)) for k in islice(keys, batch_size)]

        pending = submit()
        while pending and not should_stop():
            upcoming = submit()  # queued now, decoded while this batch runs forward
            yield from _score_batch(pending, loaded, thumbs)
            pending = upcoming


def _score_batch(pending: list[tuple[str, Future]], loaded: LoadedModel,
                 thumbs: ThumbnailWriter | None = None) -> Iterator[dict]:
    """Rows for one batch: decoded images go through the model, failures become error rows."""
    decoded = []
    for key, fut in pending:
        try:
            decoded.append((key, fut.result()))
        except TransientError:
            raise  # storage is down: the whole shard retries, rows are not lost as errors
        except Exception as e:  # anything else is this image's problem only
            decoded.append((key, f"cannot read image: {type(e).__name__}: {e}"))
    decoded = _decode_jpegs_on_gpu(decoded, loaded, thumbs)
    good = [v for _, v in decoded if not isinstance(v, str)]
    probs = iter(forward(loaded, _stack(good, loaded.device)) if good else ())
    metrics.record_batch(len(good), len(decoded) - len(good))
    for key, value in decoded:
        if isinstance(value, str):
            yield error_row(key, value)
            continue
        p = next(probs)
        best = int(p.argmax())
        yield {"image": key, "group": group_of(key), "label": loaded.classes[best],
               "confidence": round(float(p[best]), 6),
               "probs": {c: round(float(x), 6) for c, x in zip(loaded.classes, p, strict=True)},
               "error": None}


@contextmanager
def _closing(thumbs: ThumbnailWriter | None):
    """Flush the thumbnails however scoring ends, so a counted shard has its thumbnails."""
    try:
        yield
    finally:
        if thumbs:
            thumbs.close()


def error_row(key: str, reason: str) -> dict:
    """The result row of an image that could not be scored."""
    return {"image": key, "group": group_of(key), "label": None, "confidence": None,
            "probs": None, "error": reason}


def _decode_jpegs_on_gpu(decoded: list, loaded: LoadedModel,
                         thumbs: ThumbnailWriter | None = None) -> list:
    """Replace Jpeg bytes by GPU-decoded tensors; a batch nvJPEG refuses falls back to the CPU."""
    jpegs = [i for i, (_, v) in enumerate(decoded) if isinstance(v, Jpeg)]
    if not jpegs:
        return decoded
    out = list(decoded)
    try:
        images = decode_batch_gpu([decoded[i][1] for i in jpegs], loaded.spec, loaded.device)
        for n, i in enumerate(jpegs):
            out[i] = (decoded[i][0], images[n])
        if thumbs:  # no PIL image on this path: thumbnails of the model's crops
            thumbs.add_batch([decoded[i][0] for i in jpegs], images)
    except Exception:  # one corrupt JPEG fails nvJPEG's whole batch: decode these on the CPU
        for i in jpegs:
            key, data = decoded[i]
            try:
                out[i] = (key, preprocess(bytes(data), loaded.spec,
                                          on_decoded=thumbs and partial(thumbs.add, key)))
            except ImageRejected as e:
                out[i] = (key, str(e))
    return out


def _stack(images: list, device: torch.device) -> torch.Tensor | np.ndarray:
    """One uint8 NHWC batch from CPU arrays and/or device tensors."""
    if all(isinstance(v, np.ndarray) for v in images):
        return np.stack(images)
    # torch.tensor copies an array (decoded arrays are read-only views of Pillow's buffer)
    return torch.stack([v.to(device) if isinstance(v, torch.Tensor) else torch.tensor(v, device=device)
                        for v in images])
