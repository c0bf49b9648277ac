"""Probing a reaction video: can it be scored, how long is it, which way is up.

Decoded with PyAV, whose wheel carries FFmpeg and its codecs (H.264, VP8/VP9, AV1...): nothing
to install beside it. The limits (FACESENSE_VIDEO_*) are checked from the headers, before any
frame is decoded, and the first frame is decoded to prove the file is a video.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
MIN_SIDE = 16  # smaller frames hold no face worth scoring: a 1x1 video is refused
EPS = 1e-6  # seconds: presentation times are rounded to their time base
SEEK_BACK = 0.5  # seconds before the sample preceding a shard that its keyframe seek aims at

Source = str | Path | BinaryIO


class VideoError(ValueError):
    """A video that cannot be scored; `at` (seconds) when it broke after its first frames."""

    def __init__(self, message: str, at: float | None = None):
        super().__init__(message)
        self.at = at


@dataclass(frozen=True)
class VideoLimits:
    """The settings' video limits (FACESENSE_VIDEO_*)."""

    max_seconds: float = 3600.0
    max_side: int = 4096
    max_frames: int = 1_000_000
    fps: float = 5.0
    max_fps: float = 30.0
    shard_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings) -> VideoLimits:
        """The limits a Settings object holds."""
        return cls(settings.video_max_seconds, settings.video_max_side, settings.video_max_frames,
                   settings.video_fps, settings.video_max_fps, settings.video_shard_seconds)


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video found: its length, upright frame size and first presentation time."""

    duration: float  # seconds, as the container declares (or a scan of its packets finds)
    width: int  # upright: rotation metadata applied
    height: int
    rotation: int  # degrees counter-clockwise that turn a decoded frame upright
    rate: float  # average frames a second, as declared
    codec: str
    start: float  # presentation time of the first frame, seconds

    def samples(self, fps: float) -> int:
        """How many samples the video holds at fps: every k with k / fps < duration."""
        return max(1, math.ceil(self.duration * fps - EPS))


@dataclass(frozen=True)
class Sample:
    """One sampled frame: its time from the first frame, its index k, and the upright image."""

    t: float
    frame: int
    image: Image.Image


def is_video(name: str) -> bool:
    """True for a file name with a video extension (any case)."""
    return name.lower().endswith(VIDEO_EXTENSIONS)


def check_fps(fps: float, limits: VideoLimits) -> float:
    """fps as a float if it is a sampling rate the limits allow, else ValueError."""
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= limits.max_fps:
        raise ValueError(f"video_fps must be a number above 0 and at most {limits.max_fps:g}"
                         " (FACESENSE_VIDEO_MAX_FPS)")
    return float(fps)


@contextmanager
def opened(src: Source):
    """An open PyAV container and its video stream, or VideoError saying why there is none."""
    if isinstance(src, str | Path) and Path(src).stat().st_size == 0:
        raise VideoError("not a video: the file is empty")
    try:
        container = av.open(src if not isinstance(src, Path) else str(src), "r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, EOFError) as e:
        raise VideoError(f"not a readable video: {_why(e)}") from None
    try:
        if not container.streams.video:
            sound = " (audio only)" if container.streams.audio else ""
            raise VideoError(f"no video track{sound}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with scoring
        yield container, stream
    finally:
        container.close()


def probe(src: Source, limits: VideoLimits) -> VideoInfo:
    """The video's duration, upright size and rotation, checked against the limits (VideoError),
    its first frame decoded: a file that opens but does not decode is refused here."""
    with opened(src) as (container, stream):
        w, h = stream.codec_context.width, stream.codec_context.height
        _check_size(w, h, limits)  # before any decoding: a declared 16000 x 16000 is not allocated
        duration = _duration(container, stream, limits)
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(f"the video's first frame does not decode: {_why(e)}") from None
        if first is None:
            raise VideoError("the video track holds no frame")
        rotation = _rotation(first, stream)
        if rotation % 180:
            w, h = h, w
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        return VideoInfo(duration, w, h, rotation, rate, stream.codec_context.name,
                         float(first.time or 0.0))


def _check_size(w: int, h: int, limits: VideoLimits) -> None:
    """VideoError for a frame size outside MIN_SIDE .. limits.max_side."""
    if not w or not h:
        raise VideoError("the video declares no frame size")
    if max(w, h) > limits.max_side:
        raise VideoError(f"frames of {w}x{h} are larger than {limits.max_side} px a side"
                         " (FACESENSE_VIDEO_MAX_SIDE)")
    if min(w, h) < MIN_SIDE:
        raise VideoError(f"frames of {w}x{h} are smaller than {MIN_SIDE} px a side")


def _duration(container, stream, limits: VideoLimits) -> float:
    """Seconds the video track lasts: the stream's own declared length, else the container's,
    else a scan of the packets (no decoding: live WebM recordings declare none)."""
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        seconds = _scan(container, stream, limits)
    if seconds > limits.max_seconds:
        raise VideoError(f"the video is {seconds:.1f} s long, longer than {limits.max_seconds:g} s"
                         " (FACESENSE_VIDEO_MAX_SECONDS)")
    if seconds <= 0:
        raise VideoError("the video declares no duration and holds no timed frame")
    return seconds


def _scan(container, stream, limits: VideoLimits) -> float:
    """The end of the last packet's presentation, read packet by packet, then back to the start."""
    end, tb = 0.0, stream.time_base
    for packet in container.demux(stream):
        if packet.pts is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * tb))
            if end > limits.max_seconds:
                break  # long enough to refuse: no need to read the rest
    container.seek(0)
    return end


def _rotation(frame, stream) -> int:
    """Degrees counter-clockwise that turn the frame upright: the display matrix (phones), else
    an old-style `rotate` tag (degrees clockwise), rounded to a quarter turn."""
    degrees = frame.rotation
    if not degrees and stream.metadata.get("rotate", "").lstrip("-").isdigit():
        degrees = -int(stream.metadata["rotate"])
    return round(degrees / 90) * 90 % 360


def _why(error: Exception) -> str:
    """An FFmpeg error's message without its errno and file name."""
    return getattr(error, "strerror", None) or str(error)
