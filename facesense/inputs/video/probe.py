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

from facesense.inputs.video.limits import VideoLimits

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


@contextmanager
def opened(src: Source):
    """An open PyAV container and its video stream, or VideoError saying why there is none."""
    if _empty(src):
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


def _empty(src: Source) -> bool:
    """True for a file (or a seekable reader of one) of zero bytes."""
    if isinstance(src, str | Path):
        return Path(src).stat().st_size == 0
    end = src.seek(0, 2)
    src.seek(0)
    return end == 0


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
