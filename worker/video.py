"""Scoring one video shard: its sampled frames in batches, a row per face (or per frame).

The next batch of frames is decoded (and, without faces, fit to the model's input) in a thread
while the current one runs forward; PyAV and Pillow release the GIL, so decoding overlaps the
model. Rows are a photo's fields plus `t` (seconds from the ad's start: the sample's time in the
recording less the manifest's t0, 3 decimals) and `frame` (the sample's index in the video).
A video that broke adds one error row naming the time (t), after the frames before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice

import numpy as np

from facesense.inputs.keys import group_of
from facesense.inputs.video.frames import sample
from facesense.inputs.video.probe import VideoError, VideoInfo
from facesense.inputs.video.reader import open_video
from facesense.outputs.rows import error_row, label_fields
from facesense.storage import Store
from runtime.faces import CutFaces, face_copy, in_photo
from runtime.preprocess import fit
from runtime.serving import LoadedModel, forward
from worker import metrics


def video_rows(plan: dict, loaded: LoadedModel, source: Store, *, batch_size: int,
               faces: CutFaces | None = None,
               should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """The rows of one video shard's plan (facesense.inputs.video.plan); stops early (fewer
    rows) when should_stop() turns true between batches."""
    key = plan["video"]
    if "error" in plan:  # the video could not be opened or is over a limit: one error row
        yield _error(key, plan["error"], None, faces)
        return
    info, t0 = VideoInfo(**plan["info"]), plan.get("t0") or 0.0
    per_batch = max(1, batch_size // 4) if faces else batch_size  # frames are held whole with faces
    with open_video(source, key) as f, ThreadPoolExecutor(1, thread_name_prefix="frames") as pool:
        samples = sample(f, info, plan["fps"], plan["k0"], plan["k1"])
        # decoded (faces: and found) in the thread while the batch before runs forward
        prepare = partial(_found, faces, loaded.spec) if faces else partial(_fitted, loaded.spec)
        pending = pool.submit(_next_batch, samples, per_batch, prepare)
        try:
            while True:
                batch, broke = pending.result()
                if batch and not broke:
                    pending = pool.submit(_next_batch, samples, per_batch, prepare)
                if faces:
                    yield from _face_rows(key, batch, loaded, t0, batch_size)
                else:
                    yield from _frame_rows(key, batch, loaded, t0)
                if broke is not None:
                    yield _error(key, str(broke), None if broke.at is None else broke.at - t0, faces)
                    return
                if not batch or should_stop():
                    return
        finally:
            pending.cancel()
            pending.exception()  # the decoding thread is done with the frames before they close
            samples.close()


def _next_batch(samples: Iterator, n: int, prepare) -> tuple[list, VideoError | None]:
    """Up to n samples prepared for the model, and the VideoError that ended the video there
    (if one did)."""
    batch: list = []
    try:
        for s in islice(samples, n):
            batch.append((s.t, s.frame, s.image))
    except VideoError as e:
        return prepare(batch), e
    return prepare(batch), None


def _fitted(spec: dict, batch: list) -> list:
    """Faces off: each frame fit to the model's input."""
    return [(t, k, fit(image, spec)) for t, k, image in batch]


def _found(faces: CutFaces, spec: dict, batch: list) -> list:
    """Faces on: each frame's copy and size, and its faces with their model inputs."""
    held = [face_copy(image) for _, _, image in batch]  # (the copy faces are found on, size)
    # The whole batch in one call (a worker's is the shard's runtime.facefollow.FaceFollower:
    # its scheduled full detections together, faces followed through the rest), on all the
    # intra-op threads though the model's forward runs meanwhile: finding faces is most of the
    # time, and halving its threads cost 7-14 % of the frames/s (bench.video).
    cuts = faces([copy for copy, _ in held], spec) if batch else []
    return [(t, k, copy_size, cut) for (t, k, _), copy_size, cut in zip(batch, held, cuts, strict=True)]


def _frame_rows(key: str, batch: list, loaded: LoadedModel, t0: float) -> Iterator[dict]:
    """Faces off: one row per frame."""
    if not batch:
        return
    probs = forward(loaded, np.stack([x for _, _, x in batch]))
    metrics.record_batch(len(batch), 0)
    for (t, k, _), p in zip(batch, probs, strict=True):
        yield _row(key, {"t": round(t - t0, 3), "frame": k}, label_fields(p, loaded.classes))


def _face_rows(key: str, batch: list, loaded: LoadedModel, t0: float,
               batch_size: int) -> Iterator[dict]:
    """Faces on: a row per face (largest first), or one with face None for a frame without."""
    if not batch:
        return
    inputs = [pixels for _, _, _, cut in batch for _, pixels in cut]
    probs = iter(np.concatenate([forward(loaded, np.stack(inputs[i:i + batch_size]))
                                 for i in range(0, len(inputs), batch_size)]) if inputs else ())
    metrics.record_batch(len(batch), 0)
    for t, k, (copy, size), cut in batch:
        at = {"t": round(t - t0, 3), "frame": k}
        if not cut:
            yield _row(key, at, error_row(key, None, faces=True))
            continue
        for n, (face, _) in enumerate(cut):
            yield _row(key, at, {"face": n, "box": in_photo(face.box, copy.size, size),
                                 "face_score": face.score, **label_fields(next(probs), loaded.classes)})


def _row(key: str, at: dict, fields: dict) -> dict:
    """A video row: the photo row's fields with t and frame after the group."""
    return {"image": key, "group": group_of(key), **at,
            **{k: v for k, v in fields.items() if k not in ("image", "group")}}


def video_poison_row(plan: dict, faces: bool) -> dict:
    """The row of a video shard workers kept dying on: its time range is not scored."""
    fps, t0 = plan.get("fps") or 1, plan.get("t0") or 0.0
    at = plan["k0"] / fps - t0 if "k0" in plan else None
    span = f" from {plan['k0'] / fps:.3f} s to {plan['k1'] / fps:.3f} s" if "k0" in plan else ""
    return _error(plan["video"], f"not scored: a worker died while decoding or scoring this "
                  f"video{span}", at, faces)


def _error(key: str, reason: str, at: float | None, faces) -> dict:
    """A video's error row: t is when it broke (None: it never opened)."""
    return _row(key, {"t": None if at is None else round(at, 3), "frame": None},
                error_row(key, reason, faces=bool(faces)))
