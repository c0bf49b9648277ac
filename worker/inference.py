"""The batched inference engine: fetch + decode in threads, batch, forward, rows out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch

from facesense.errors import FacesenseError, ObjectNotFound, TransientError
from facesense.sources import group_of
from facesense.store import TooLarge
from trainer.presets import ImageRejected, normalize, preprocess

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def resolve_precision(setting: str, device: torch.device) -> str:
    """'auto': bf16 (or fp16) autocast on CUDA; fp32 on CPU."""
    if setting != "auto":
        if setting not in PRECISIONS:
            raise FacesenseError(f"unknown precision {setting!r}: use auto, fp32, bf16 or fp16")
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def default_batch_size(device: torch.device) -> int:
    """A batch that keeps each device busy without wasting memory."""
    return 256 if device.type == "cuda" else 64


def default_threads() -> int:
    """Decode threads: a few more than cores, since fetches wait on I/O."""
    return (os.cpu_count() or 2) + 2


def forward(loaded: LoadedModel, batch: np.ndarray) -> np.ndarray:
    """uint8 NHWC batch -> class probabilities (float32), normalised on the device."""
    x = normalize(torch.from_numpy(batch), loaded.spec, loaded.device)
    dtype = PRECISIONS[loaded.precision]
    with torch.inference_mode(), torch.autocast(loaded.device.type, dtype=dtype,
                                                enabled=dtype is not None):
        logits = loaded.model(x)
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


def score(keys: Iterable[str], loaded: LoadedModel, fetch: Callable[[str, int], bytes], *,
          batch_size: int, threads: int, max_pixels: int, max_bytes: int,
          should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """One result row per key, in order; decoding of batch k+1 overlaps the forward of batch k.

    fetch(key, max_bytes) returns an image's bytes (e.g. functools.partial(read_limited, store)).

    Stops early (fewer rows than keys) when should_stop() turns true between batches.
    """
    def load(key: str):
        try:
            data = fetch(key, max_bytes)  # stops reading past the limit: memory stays bounded
            return preprocess(data, loaded.spec, max_pixels=max_pixels)
        except (ImageRejected, TooLarge) as e:
            return str(e)
        except ObjectNotFound:
            return "image not found in the source"

    keys = iter(keys)
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        def submit() -> list[tuple[str, Future]]:
            return [(k, pool.submit(load, k)) for k in islice(keys, batch_size)]

        pending = submit()
        while pending and not should_stop():
            upcoming = submit()  # queued now, decoded while this batch runs forward
            yield from _score_batch(pending, loaded)
            pending = upcoming


def _score_batch(pending: list[tuple[str, Future]], loaded: LoadedModel) -> Iterator[dict]:
    """Rows for one batch: decoded images go through the model, failures become error rows."""
    decoded = []
    for key, fut in pending:
        try:
            decoded.append((key, fut.result()))
        except TransientError:
            raise  # storage is down: the whole shard retries, rows are not lost as errors
        except Exception as e:  # anything else is this image's problem only
            decoded.append((key, f"cannot read image: {type(e).__name__}: {e}"))
    good = [(k, v) for k, v in decoded if isinstance(v, np.ndarray)]
    probs = iter(forward(loaded, np.stack([v for _, v in good])) if good else ())
    for key, value in decoded:
        if isinstance(value, str):
            yield {"image": key, "group": group_of(key), "label": None, "confidence": None,
                   "probs": None, "error": value}
            continue
        p = next(probs)
        best = int(p.argmax())
        yield {"image": key, "group": group_of(key), "label": loaded.classes[best],
               "confidence": round(float(p[best]), 6),
               "probs": {c: round(float(x), 6) for c, x in zip(loaded.classes, p, strict=True)},
               "error": None}
