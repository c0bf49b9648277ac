"""The benchmarks' webcam-like reaction video: one face, 640x480, 30 fps, H.264 in MP4."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bench.face_photos import astronaut, face_free

SIZE, RATE = (640, 480), 30


def make_video(path: Path, seconds: float) -> Path:
    """A webcam-like H.264 MP4: the astronaut drifting a few pixels over a real room-like scene
    (a textured background gives the face detector the false candidates a real webcam does),
    30 frames a second."""
    face = astronaut().resize((360, 360))
    room = face_free()["coffee"].resize(SIZE)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=RATE, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for i in range(round(seconds * RATE)):
            canvas = room.copy()
            canvas.paste(face, (140 + round(10 * np.sin(i / 15)), 60 + round(5 * np.cos(i / 20))))
            frame = av.VideoFrame.from_image(canvas)
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path
