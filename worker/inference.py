"""The batched inference engine: fetch + decode in threads, batch, forward, rows out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from itertools import islice
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from facesense.errors import ObjectNotFound, TransientError
from facesense.inputs.netguard import FetchError
from facesense.outputs.rows import error_row, scored_row
from facesense.outputs.thumbnails import ThumbnailWriter
from facesense.storage import TooLarge
from runtime.faces import CutFaces, face_copy, in_photo
from runtime.gpu_decode import decode_batch_gpu, is_jpeg
from runtime.preprocess import ImageRejected, decode, open_image, plain_jpeg, preprocess
from runtime.serving import LoadedModel, forward
from worker import metrics

log = logging.getLogger(__name__)


class Jpeg(bytes):
    """JPEG bytes whose header passed the checks, left for the GPU to decode with its batch."""


class Scorer:
    """Scores image keys with one loaded model under a worker's limits, in batches: decoding
    (and finding faces) of batch k+1 overlaps the forward of batch k.

    fetch(key, max_bytes) returns an image's bytes (e.g. functools.partial(read_limited, store)).
    decoder 'gpu' leaves JPEGs to nvJPEG on the device, in batches (see runtime.gpu_decode).
    faces (runtime.faces.cut_faces with its detector and options) scores each face found:
    a row per face, or one row with face None for an image without any; a batch's faces are
    found in a thread of their own.
    """

    def __init__(self, loaded: LoadedModel, fetch: Callable[[str, int], bytes], *,
                 batch_size: int, threads: int, max_pixels: int, max_bytes: int,
                 decoder: str = "cpu", faces: CutFaces | None = None):
        self.loaded, self.fetch, self.decoder, self.faces = loaded, fetch, decoder, faces
        self.batch_size, self.threads = batch_size, threads
        self.max_pixels, self.max_bytes = max_pixels, max_bytes
        # Whole photos are held until their faces are cut: fewer of them per batch bounds memory.
        self.per_batch = max(1, batch_size // 4) if faces else batch_size

    def score(self, keys: Iterable[str], should_stop: Callable[[], bool] = lambda: False,
              thumbs: ThumbnailWriter | None = None) -> Iterator[dict]:
        """Result rows for keys, in order; stops early (fewer rows than keys) when
        should_stop() turns true between batches. thumbs gets each decoded image for the
        gallery, and is closed (flushed) at the end."""
        keys = iter(keys)
        with (ThreadPoolExecutor(self.threads, thread_name_prefix="decode") as pool,
              ThreadPoolExecutor(1, thread_name_prefix="faces") as finder,
              _closing(thumbs), metrics.shard_meter()):
            pending = self._submit(keys, pool, finder, thumbs)
            while pending and not should_stop():
                upcoming = self._submit(keys, pool, finder, thumbs)  # runs during this forward
                if self.faces:
                    yield from _score_faces(pending.result(), self.loaded, self.batch_size)
                else:
                    yield from _score_batch(pending, self.loaded, thumbs)
                pending = upcoming

    def _submit(self, keys: Iterator[str], pool: ThreadPoolExecutor, finder: ThreadPoolExecutor,
                thumbs: ThumbnailWriter | None):
        """The next batch queued: (key, future input) pairs, or with faces one future of them
        all, faces found; empty when the keys are done."""
        pending = [(k, pool.submit(self._load, k, thumbs)) for k in islice(keys, self.per_batch)]
        if self.faces and pending:
            return finder.submit(_find_faces, pending, self.faces, self.loaded.spec)
        return pending

    def _load(self, key: str, thumbs: ThumbnailWriter | None):
        """An image's model input (a photo with faces on, JPEG bytes left for the GPU), or why
        it can't be scored."""
        try:
            data = self.fetch(key, self.max_bytes)  # fetch stops past the byte limit
            if self.faces:  # the upright photo, held smaller: faces are cut from it per batch
                img = decode(data, max_pixels=self.max_pixels)
                if thumbs:
                    thumbs.add(key, img)
                return Photo(*face_copy(img))
            if self.decoder == "gpu" and is_jpeg(data):
                img = open_image(data, max_pixels=self.max_pixels)  # header only: the pixel limit
                if plain_jpeg(img, data):  # CMYK, truncated: the CPU path gets them right
                    return Jpeg(data)
            return preprocess(data, self.loaded.spec, max_pixels=self.max_pixels,
                              on_decoded=thumbs and partial(thumbs.add, key))
        except (ImageRejected, TooLarge, FetchError) as e:  # FetchError: a URL item's reason
            return str(e)
        except ObjectNotFound:
            return "image not found in the source"


def score(keys: Iterable[str], loaded: LoadedModel, fetch: Callable[[str, int], bytes], *,
          should_stop: Callable[[], bool] = lambda: False, thumbs: ThumbnailWriter | None = None,
          **options) -> Iterator[dict]:
    """One pass of a Scorer(loaded, fetch, **options) over keys (see Scorer.score)."""
    return Scorer(loaded, fetch, **options).score(keys, should_stop, thumbs)


def _resolved(pending: list[tuple[str, Future]]) -> list[tuple[str, object]]:
    """(key, input or error text) per image; storage being down fails the whole shard instead."""
    decoded = []
    for key, fut in pending:
        try:
            decoded.append((key, fut.result()))
        except TransientError:
            raise  # storage is down: the whole shard retries, rows are not lost as errors
        except Exception as e:  # anything else is this image's problem only
            decoded.append((key, f"cannot read image: {type(e).__name__}: {e}"))
    return decoded


def _score_batch(pending: list[tuple[str, Future]], loaded: LoadedModel,
                 thumbs: ThumbnailWriter | None = None) -> Iterator[dict]:
    """Rows for one batch: decoded images go through the model, failures become error rows."""
    decoded = _decode_jpegs_on_gpu(_resolved(pending), loaded, thumbs)
    good = [v for _, v in decoded if not isinstance(v, str)]
    probs = iter(forward(loaded, _stack(good, loaded.device)) if good else ())
    metrics.record_batch(len(good), len(decoded) - len(good))
    for key, value in decoded:
        if isinstance(value, str):
            yield error_row(key, value)
            continue
        yield scored_row(key, next(probs), loaded.classes)


class Photo(NamedTuple):
    """A decoded photo as held for its faces (runtime.faces.face_copy), and its own size."""

    image: Image.Image
    size: tuple[int, int]


def _find_faces(pending: list[tuple[str, Future]], faces: CutFaces, spec: dict) -> list:
    """(key, error text or [(face, box in the photo, model input)...]) per image of a batch."""
    decoded = _resolved(pending)
    photos = [i for i, (_, v) in enumerate(decoded) if not isinstance(v, str)]
    try:
        found = faces([decoded[i][1].image for i in photos], spec) if photos else []
    except Exception as e:  # one photo the detector can't take must not fail its batch
        found = [_faces_or_error(faces, decoded[i][1].image, spec) for i in photos]
        if _device_failed(e) or (len(found) > 1 and all(isinstance(f, str) for f in found)):
            raise  # not a photo's fault (the device failed, say): the shard is retried
    for i, cut in zip(photos, found, strict=True):
        photo = decoded[i][1]
        decoded[i] = (decoded[i][0], cut if isinstance(cut, str) else
                      [(face, in_photo(face.box, photo.image.size, photo.size), pixels)
                       for face, pixels in cut])
    return decoded


def _device_failed(e: Exception) -> bool:
    """An error of the device, not of a photo: out of memory, or CUDA's own."""
    return isinstance(e, torch.OutOfMemoryError) or "CUDA" in str(e)


def _faces_or_error(faces: CutFaces, image: Image.Image, spec: dict):
    try:
        return faces([image], spec)[0]
    except Exception as e:
        return f"cannot find faces: {type(e).__name__}: {e}"


def _score_faces(found: list, loaded: LoadedModel, batch_size: int) -> Iterator[dict]:
    """Rows for one batch of photos: one per face (largest first), or one with face None."""
    inputs = [pixels for _, v in found if not isinstance(v, str) for _, _, pixels in v]
    probs = iter(np.concatenate([forward(loaded, np.stack(inputs[i:i + batch_size]))
                                 for i in range(0, len(inputs), batch_size)])
                 if inputs else ())
    failed = sum(isinstance(v, str) for _, v in found)
    metrics.record_batch(len(found) - failed, failed)
    for key, value in found:
        if isinstance(value, str) or not value:  # an error, or no face: one row, face None
            yield error_row(key, value or None, faces=True)
            continue
        for n, (face, box, _) in enumerate(value):
            yield scored_row(key, next(probs), loaded.classes, face=n, box=box,
                             face_score=face.score)


@contextmanager
def _closing(thumbs: ThumbnailWriter | None):
    """Flush the thumbnails however scoring ends, so a counted shard has its thumbnails."""
    try:
        yield
    finally:
        if thumbs:
            thumbs.close()


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
