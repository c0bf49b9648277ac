"""Reaction videos as inputs: probe (limits, length, rotation) and frames sampled by time.

May import PyAV, Pillow and the core's base modules (no torch): the API may probe a video too.
"""

from facesense.inputs.video.frames import sample, shard_ranges
from facesense.inputs.video.probe import (
    VIDEO_EXTENSIONS,
    Sample,
    VideoError,
    VideoInfo,
    VideoLimits,
    check_fps,
    is_video,
    probe,
)

__all__ = ["VIDEO_EXTENSIONS", "Sample", "VideoError", "VideoInfo", "VideoLimits", "check_fps",
           "is_video", "probe", "sample", "shard_ranges"]
