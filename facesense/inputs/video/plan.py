"""A scoring job's listing cut into shards: photos in groups of shard_size, each video probed and
cut into time ranges of FACESENSE_VIDEO_SHARD_SECONDS (its samples [k0, k1) at the job's fps).

A shard's plan is a list of photo keys, or one video shard: {"video": key, "k0", "k1", "fps",
"t0", "info"} (info: the probe's findings, so no shard probes again), or {"video": key,
"error"} for a video that cannot be scored (one error row). t0, a manifest's column, is where
the ad starts in the recording: rows' t are seconds from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

from facesense.errors import ObjectNotFound, SourceError
from facesense.inputs.video.frames import shard_ranges
from facesense.inputs.video.limits import VideoLimits, is_video
from facesense.inputs.video.probe import VideoError, VideoInfo, probe
from facesense.inputs.video.reader import open_video
from facesense.settings import Settings
from facesense.storage import Store

PROBES = 8  # videos probed at once while planning (S3 reads wait on the network)
AHEAD = 64  # listed items looked at together: their videos are probed in parallel


def listed(source: Store) -> Iterator[tuple[str, object]]:
    """(key, t0 as given or None) per item of a source: a manifest's lines carry their t0."""
    from facesense.inputs.manifest_source import ManifestSource, entries
    from facesense.inputs.sources import list_images

    if isinstance(source, ManifestSource):
        return ((line["image"], (line.get("meta") or {}).get("t0"))
                for line in entries(source.store, source.key))
    return ((key, None) for key in list_images(source))


def retried(source: Store, keys: list[str]) -> Iterator[tuple[str, object]]:
    """(key, t0) per item a retry scores again: a video once however many of its time ranges
    failed (it is scored again whole), with the t0 its manifest line gave it."""
    from facesense.inputs.manifest_source import ManifestSource

    videos = {key for key in keys if is_video(key)}
    seen: set[str] = set()  # a photo listed twice stays twice: two manifest lines, two rows
    keys = [k for k in keys if k not in videos or not (k in seen or seen.add(k))]
    t0: dict[str, object] = {}
    if videos and isinstance(source, ManifestSource):  # only a manifest's lines carry t0
        for key, at in listed(source):
            if key in videos:
                t0.setdefault(key, at)
    return ((key, t0.get(key)) for key in keys)


def shard_plans(items: Iterable[tuple[str, object]], source: Store, settings: Settings,
                fps: float | None = None) -> Iterator[list[str] | dict]:
    """The plans of a listing's shards in order (photos batched, videos cut by time); raises
    SourceError once the videos' samples pass FACESENSE_VIDEO_MAX_FRAMES."""
    limits = VideoLimits.from_settings(settings)
    fps = fps or limits.fps
    photos: list[str] = []
    frames = 0
    items = iter(items)
    with ThreadPoolExecutor(PROBES, thread_name_prefix="probe") as pool:
        while chunk := list(islice(items, AHEAD)):
            found = pool.map(lambda item: _video(source, item, limits) if is_video(item[0]) else None,
                             chunk)
            for (key, _), video in zip(chunk, found, strict=True):
                if video is None:
                    photos.append(key)
                    if len(photos) == settings.shard_size:
                        yield photos
                        photos = []
                    continue
                if "info" in video:
                    frames += VideoInfo(**video["info"]).samples(fps)
                    _check_frames(frames, limits)
                yield from _cut(video, fps, limits)
    if photos:
        yield photos


def size_of(plan: list[str] | dict) -> int:
    """What a shard counts as done: its photos, its video samples, or 1 (a video's error row)."""
    if isinstance(plan, list):
        return len(plan)
    return plan["k1"] - plan["k0"] if "k1" in plan else 1


def is_video_plan(plan: list[str] | dict) -> bool:
    """True for a video shard's plan."""
    return isinstance(plan, dict)


def _video(source: Store, item: tuple[str, object], limits: VideoLimits) -> dict:
    """A video's probe and t0 ({"video", "info", "t0"}), or its error ({"video", "error"})."""
    key, raw_t0 = item
    try:
        t0 = _t0(raw_t0)
        with open_video(source, key) as f:
            info = probe(f, limits)
    except ObjectNotFound:
        return {"video": key, "error": "video not found in the source"}
    except (VideoError, ValueError) as e:
        return {"video": key, "error": str(e)}
    return {"video": key, "info": dataclasses.asdict(info), "t0": t0}


def _cut(video: dict, fps: float, limits: VideoLimits) -> Iterator[dict]:
    """A probed video's time-range shards (an unopenable one: its error plan)."""
    if "error" in video:
        yield video
        return
    info = VideoInfo(**video["info"])
    for k0, k1 in shard_ranges(info, fps, limits.shard_seconds):
        yield {**video, "k0": k0, "k1": k1, "fps": fps}


def _t0(raw) -> float:
    """A manifest's t0 cell as seconds (empty: 0)."""
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"t0 {raw!r} is not a number of seconds >= 0 into the recording")
    return value


def _check_frames(frames: int, limits: VideoLimits) -> None:
    if frames > limits.max_frames:
        raise SourceError(f"the job's videos hold more than {limits.max_frames} frames at its "
                          "video_fps (FACESENSE_VIDEO_MAX_FRAMES): lower video_fps or split the job")
