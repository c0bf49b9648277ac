"""Videos for tests, encoded on the spot with PyAV: real faces, frame numbers drawn in, hostile files."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

MS = Fraction(1, 1000)
BITS = 10  # frame numbers up to 1023 drawn as blocks along the top edge
BLOCK = 16
# Fast settings: the tests encode a few hundred frames each. x264 without B-frames keeps the
# stream simple; VP9 (libvpx-vp9, realtime) is the WebM codec.
CODECS = {".mp4": ("libx264", {"preset": "ultrafast", "tune": "zerolatency"}),
          ".m4v": ("libx264", {"preset": "ultrafast"}),
          ".mov": ("libx264", {"preset": "ultrafast"}),
          ".mkv": ("libx264", {"preset": "ultrafast"}),
          ".webm": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"}),
          ".avi": ("mpeg4", {})}


def face_photo(size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """scikit-image's astronaut (a real face) on a grey canvas of the given size, as RGB."""
    from skimage import data

    w, h = size
    side = min(w, h)
    face = Image.fromarray(data.astronaut()).resize((side, side), Image.BILINEAR)
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(face, ((w - side) // 2, (h - side) // 2))
    return np.asarray(canvas).copy()


def stamp(base: np.ndarray, number: int) -> np.ndarray:
    """A copy of base with number drawn in binary as black / white blocks in the top-left corner."""
    out = base.copy()
    for bit in range(BITS):
        out[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 255 if number >> bit & 1 else 0
    return out


def read_stamp(image: Image.Image | np.ndarray) -> int:
    """The number stamp() drew (the blocks read back by their mean brightness)."""
    arr = np.asarray(image.convert("L") if isinstance(image, Image.Image) else image)
    return sum(1 << bit for bit in range(BITS)
               if arr[2:BLOCK - 2, bit * BLOCK + 2:(bit + 1) * BLOCK - 2].mean() > 128)


def write_video(path: Path, times: list[float], size: tuple[int, int] = (320, 240),
                rotation: int = 0, audio: bool = False, faststart: bool = False,
                base: np.ndarray | None = None, move: int = 0) -> Path:
    """Encode frames shown at the given presentation times (seconds), frame i stamped with i.

    The container follows the file's extension; times need not be evenly spaced (variable
    frame rate); rotation sets the display matrix (counter-clockwise degrees, as phones do);
    move shifts the picture right that many pixels a frame (wrapping round): a moving face."""
    codec, options = CODECS[path.suffix.lower()]
    base = face_photo(size) if base is None else base
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as out:
        stream = out.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = MS
        stream.codec_context.gop_size = 30  # a keyframe every 30 frames: shards seek to them
        if rotation:
            stream.set_display_rotation(rotation)
        sound = _sound_stream(out) if audio else None  # every stream exists before the first packet
        for i, t in enumerate(times):
            picture = np.roll(base, move * i, axis=1) if move else base
            frame = av.VideoFrame.from_ndarray(stamp(picture, i), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), MS
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound:
            _add_silence(out, sound, times[-1] if times else 1.0)
    return path


def _sound_stream(out):
    """A mono AAC track."""
    stream = out.add_stream("aac", rate=16000)
    stream.layout = "mono"
    return stream


def _add_silence(out, stream, seconds: float) -> None:
    """Silence on the AAC track (written after the video: the muxer interleaves by time)."""
    samples, step = int(seconds * 16000), 1024
    for start in range(0, samples, step):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, step), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = 16000, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def steady(seconds: float, fps: float = 30.0) -> list[float]:
    """Presentation times of a constant-frame-rate video."""
    return [i / fps for i in range(round(seconds * fps))]


def variable(seconds: float, seed: int = 0) -> list[float]:
    """Presentation times of a phone-like variable-frame-rate video: gaps from 10 to 90 ms."""
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    while t < seconds:
        times.append(round(t, 3))
        t += float(rng.choice([0.010, 0.033, 0.050, 0.090]))
    return times


def audio_only(path: Path, seconds: float = 2.0) -> Path:
    """A file with a sound track and no video track."""
    with av.open(str(path), "w") as out:
        _add_silence(out, _sound_stream(out), seconds)
    return path


def truncated(path: Path, source: Path, keep: float = 0.45) -> Path:
    """The first `keep` share of source's bytes: its header still declares the whole length."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def huge_frame(path: Path) -> Path:
    """An AVI of raw 16x16 frames whose headers declare 16000 x 16000 (a decompression bomb)."""
    raw_avi(path, [np.full((16, 16, 3), i * 50, np.uint8) for i in range(3)])
    data = bytearray(path.read_bytes())
    at = data.index(b"strf") + 12  # past the chunk's size and the header's own size
    data[at:at + 8] = struct.pack("<ii", 16000, -16000)  # width, height (negative: top-down rows)
    path.write_bytes(bytes(data))
    return path


def tiny(path: Path) -> Path:
    """A video of 1 x 1 frames (raw frames in AVI: the codecs want even sizes)."""
    return raw_avi(path, [np.zeros((1, 1, 3), np.uint8)] * 5)


def raw_avi(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """An AVI of raw BGR frames (any size: no codec's constraints)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("rawvideo", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "bgr24"
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def iou(a, b) -> float:
    """Intersection over union of two boxes [x0, y0, x1, y1]."""
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
