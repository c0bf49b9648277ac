"""Sampling a video's frames at f a second over one shard's range of samples [k0, k1).

Sample k is the frame whose presentation time is nearest to t_k = k / f after the first frame
(the earlier of two equally near; nearest, not the last one shown by t_k, because time bases
round: a 30 fps frame meant for 0.0667 s is stamped 0.06669 s). A shard seeks to the keyframe
before its range and decodes forward, converting only the frames it keeps; it holds one frame at
a time, so memory does not grow with the video. A video whose decoding fails, or ends well before
the length its container declares (a truncated file), raises VideoError naming the time it broke,
after the samples before that time; of a video's shards only the one holding its first missing
sample raises it, so a broken video gets one error, wherever its shards ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

import av
from PIL import Image

from facesense.inputs.video.probe import EPS, SEEK_BACK, Sample, Source, VideoError, VideoInfo, opened

UPRIGHT = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
           270: Image.Transpose.ROTATE_270}  # PIL's turns are counter-clockwise, as the rotation


def shard_ranges(info: VideoInfo, fps: float, shard_seconds: float) -> list[tuple[int, int]]:
    """The video's samples at fps cut into ranges [k0, k1) of shard_seconds each (the last
    shorter): together they hold every sample once."""
    total, per = info.samples(fps), max(1, round(shard_seconds * fps))
    return [(k, min(k + per, total)) for k in range(0, total, per)]


def sample(src: Source, info: VideoInfo, fps: float, k0: int = 0, k1: int | None = None
           ) -> Iterator[Sample]:
    """Samples k0 .. k1 - 1 (default: to the video's end) of the video probe() described."""
    k1 = info.samples(fps) if k1 is None else min(k1, info.samples(fps))
    if k0 >= k1:
        return
    with opened(src) as (container, stream):
        yield from _sample(container, stream, info, fps, k0, k1)


def _sample(container, stream, info: VideoInfo, fps: float, k0: int, k1: int) -> Iterator[Sample]:
    """Decode forward from the keyframe before sample k0, yielding each sample's frame."""
    def at(k: int) -> float:  # the presentation time sample k stands for
        return info.start + k / fps

    frames = _frames(container, stream, at(k0), at(k0 - 1) - SEEK_BACK, k0 > 0)
    k, shown, image, error = k0, None, None, None
    while k < k1:
        try:
            frame = next(frames, None)
        except (av.FFmpegError, ValueError, MemoryError) as e:
            error = getattr(e, "strerror", None) or str(e)
            break
        if frame is None:
            break
        if frame.time is None:
            continue
        while k < k1 and frame.time > at(k) + EPS:  # t_k lies between the last frame and this
            if shown is None or at(k) - shown.time > frame.time - at(k) + EPS:
                shown, image = frame, None  # this one is nearer to t_k
            image = image or _upright(shown, info.rotation)
            yield Sample(round(k / fps, 3), k, image)
            k += 1
        if frame is not shown:
            shown, image = frame, None
    yield from _tail(info, fps, k, k0, k1, shown, image, error)


def _tail(info: VideoInfo, fps: float, k: int, k0: int, k1: int, shown, image, error
          ) -> Iterator[Sample]:
    """After the last decoded frame: the samples it still covers, then VideoError if the video
    broke (a decoder error, or data ending well before the declared length)."""
    if k >= k1:
        return
    end = k0 / fps if shown is None else shown.time - info.start + _lasts(shown, info)
    intact = error is None and shown is not None and end >= info.duration - _slack(info)
    while k < k1 and (intact or k / fps < end - EPS):  # an intact video: its last frame to the end
        image = image or _upright(shown, info.rotation)
        yield Sample(round(k / fps, 3), k, image)
        k += 1
    # The previous shard was whole (its last sample came before the end) or there is none. A
    # shard that decoded nothing from its keyframe, which lies before the previous shard's last
    # sample, knows the video ended before that: the previous shard reports it.
    if k < k1 and (k0 == 0 or (shown is not None and (k0 - 1) / fps < end - EPS)):
        if error:
            raise VideoError(f"the video breaks at {end:.3f} s: {error}", at=round(end, 3))
        raise VideoError(f"the video ends at {end:.3f} s of the {info.duration:.3f} s its container"
                         " declares (a truncated file?)", at=round(end, 3))


def _frames(container, stream, first: float, aim: float, seek: bool) -> Iterator:
    """Decoded frames from the keyframe before time `aim` (seconds); from the start again if
    they begin after `first` (a demuxer without an index). Decoder errors reach the caller."""
    if seek and aim > 0:
        container.seek(int(aim / stream.time_base), stream=stream, backward=True)
        frames = container.decode(stream)
        head = next(frames, None)
        if head is None:  # nothing decodes past the seek (a truncated file)
            return
        if head.time is None or head.time <= first + EPS:
            yield from chain([head], frames)
            return
        container.seek(0)
    yield from container.decode(stream)


def _lasts(frame, info: VideoInfo) -> float:
    """Seconds a frame stays on screen: its own duration, else one at the average rate."""
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    return 1 / info.rate if info.rate else 0.0


def _slack(info: VideoInfo) -> float:
    """How far short of the declared length decoding may end without calling the file broken:
    containers round their lengths, and a sound track may outlast the picture."""
    return max(0.5, 3 / info.rate if info.rate else 0.5)


def _upright(frame, rotation: int) -> Image.Image:
    """The frame as an RGB image, turned upright."""
    image = frame.to_image()
    return image.transpose(UPRIGHT[rotation]) if rotation else image
