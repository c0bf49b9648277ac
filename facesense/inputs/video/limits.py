"""A job's video limits and sampling rate, checked without decoding anything (the API uses them)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from facesense.errors import BadRequest

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")


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


def is_video(name: str) -> bool:
    """True for a file name (or a URL's path) with a video extension (any case)."""
    _, sep, rest = name.partition("://")
    if sep:  # a URL (or a group's `<group>/<URL>`): its query and fragment name no file
        name = urlsplit("x://" + rest).path
    return name.lower().endswith(VIDEO_EXTENSIONS)


def check_fps(fps: float, limits: VideoLimits) -> float:
    """fps as a float if it is a sampling rate the limits allow, else ValueError."""
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= limits.max_fps:
        raise ValueError(f"video_fps must be a number above 0 and at most {limits.max_fps:g}"
                         " (FACESENSE_VIDEO_MAX_FPS)")
    return float(fps)


def job_fields(body: dict, limits: VideoLimits) -> dict:
    """A scoring job's checked video_fps as a record field (a multipart form sends text); none
    given: none recorded, FACESENSE_VIDEO_FPS applies when the job is planned."""
    if body.get("video_fps") is None:
        return {}
    raw = body["video_fps"]
    try:
        value = float(raw) if isinstance(raw, str) else raw
    except ValueError:
        value = None
    try:
        return {"video_fps": check_fps(value, limits)}
    except ValueError as e:
        raise BadRequest(f"{e} (got {raw!r})") from None
