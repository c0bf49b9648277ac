"""Real photos with known faces, for the face tests and benchmarks (images ship in scikit-image).

Group photos are composed from LFW's real face photos (scikit-image's `lfw_subset`: 100 faces,
each a different picture) pasted on real face-free scenes; where each was pasted is the truth.
"""

from __future__ import annotations

import random
from functools import cache

import numpy as np
from PIL import Image, ImageOps

FACE_FREE = ("coffee", "coins", "rocket", "moon", "page", "chelsea", "horse", "brick",
             "gravel", "text")  # ten real scenes with nobody in them (chelsea is a cat)


def _rgb(array: np.ndarray) -> Image.Image:
    """Any skimage.data array as an RGB image."""
    if array.dtype != np.uint8:
        array = (np.asarray(array, dtype=np.float64) * 255).clip(0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


@cache
def _data(name: str) -> Image.Image:
    import skimage.data
    return _rgb(getattr(skimage.data, name)())


def astronaut() -> Image.Image:
    """scikit-image's astronaut: a head-and-shoulders photo of Eileen Collins, one face."""
    return _data("astronaut").copy()


def face_free() -> dict[str, Image.Image]:
    """The ten face-free scenes by name."""
    return {name: _data(name).copy() for name in FACE_FREE}


@cache
def _lfw() -> np.ndarray:
    import skimage.data
    return skimage.data.lfw_subset()  # 200 x 25 x 25 grey: 100 faces, then 100 non-faces


def lfw_face(i: int) -> Image.Image:
    """One of LFW's 100 real face photos (25 px, tightly cropped), as RGB."""
    return _rgb(_lfw()[i % 100])


def group_photo(seed: int, faces: int, size: tuple[int, int] = (960, 640),
                background: str = "brick") -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A photo of `faces` real faces (different people) on a real scene, and where each is.

    Faces are 70-150 px, on a grid so none overlap, some mirrored; boxes are [x0, y0, x1, y1].
    """
    rng = random.Random(seed)
    img = _data(background).resize(size, Image.BILINEAR)
    cols = max(1, int(np.ceil(np.sqrt(faces * size[0] / size[1]))))
    rows = int(np.ceil(faces / cols))
    cell_w, cell_h = size[0] // cols, size[1] // rows
    cells = rng.sample(range(cols * rows), faces)
    boxes = []
    for n, cell in enumerate(cells):
        side = rng.randint(70, min(150, cell_w - 10, cell_h - 10))
        face = lfw_face(seed * 7 + n).resize((side, side), Image.BICUBIC)
        if rng.random() < 0.5:
            face = ImageOps.mirror(face)
        x = (cell % cols) * cell_w + rng.randint(0, cell_w - side)
        y = (cell // cols) * cell_h + rng.randint(0, cell_h - side)
        img.paste(face, (x, y))
        boxes.append((x, y, x + side, y + side))
    return img, boxes


def group_set(photos: int = 6, size: tuple[int, int] = (960, 640)):
    """(name, photo, boxes) for group photos of 2 to 5 faces on varied scenes."""
    scenes = ("brick", "coffee", "gravel", "rocket", "horse", "moon")
    return [(f"group{i}", *group_photo(i, 2 + i % 4, size, scenes[i % len(scenes)]))
            for i in range(photos)]


def overlap(a, b) -> float:
    """Intersection over union of two boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def matched(truth: list, found: list, least: float = 0.3) -> int:
    """How many true boxes some found box overlaps (IoU >= least; a pasted square vs a detector's
    tighter box rarely passes 0.5, so 0.3 is the usual looser bar)."""
    return sum(any(overlap(t, f) >= least for f in found) for t in truth)
