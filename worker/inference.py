"""The batched inference engine: fetch + decode in threads, batch, forward, rows out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from itertools import islice

import numpy as np
import torch

from facesense.errors import ObjectNotFound, TransientError
from facesense.inputs.netguard import FetchError
from facesense.inputs.sources import group_of
from facesense.outputs.thumbnails import ThumbnailWriter
from facesense.storage import TooLarge
from runtime.gpu_decode import decode_batch_gpu, is_jpeg
from runtime.preprocess import ImageRejected, open_image, plain_jpeg, preprocess
from runtime.serving import LoadedModel, forward
from worker import metrics

log = logging.getLogger(__name__)

class Jpeg(bytes):
    """JPEG bytes whose header passed the checks, left for the GPU to decode with its batch."""


def score(keys: Iterable[str], loaded: LoadedModel, fetch: Callable[[str, int], bytes], *,
          batch_size: int, threads: int, max_pixels: int, max_bytes: int,
          should_stop: Callable[[], bool] = lambda: False, decoder: str = "cpu",
          thumbs: ThumbnailWriter | None = None) -> Iterator[dict]:
    """One result row per key, in order; decoding of batch k+1 overlaps the forward of batch k.

    fetch(key, max_bytes) returns an image's bytes (e.g. functools.partial(read_limited, store)).
    decoder 'gpu' leaves JPEGs to nvJPEG on the device, in batches (see runtime.gpu_decode).
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
