"""Photo-like JPEGs for benchmarks: a face on a noisy, textured background, about 1 MB at 2 MP."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

from PIL import Image

from facesense.demo import draw_face


def photo(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A face pasted on a gradient with sensor-like noise (so JPEG sizes look like photos')."""
    w, h = size
    background = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    tint = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    img = Image.blend(background, tint, 0.6)
    noise = Image.effect_noise((w // 2, h // 2), 40).resize((w, h)).convert("RGB")
    img = Image.blend(img, noise, 0.25)
    face = draw_face(rng, rng.random() < 0.5, size=min(w, h) // 2).convert("RGB")
    img.paste(face, (rng.randrange(w - face.width), rng.randrange(h - face.height)))
    fine = Image.effect_noise((w, h), 60).convert("RGB")
    return Image.blend(img, fine, 0.2)


def make_photos(root: Path, n: int, size: tuple[int, int], unique: int = 64,
                seed: int = 0) -> list[Path]:
    """n JPEG files under root; only `unique` distinct images, the rest hard links to them."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        path = root / f"p{i // 1000:03d}" / f"img{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            if i < unique:
                buf = io.BytesIO()
                photo(rng, size).save(buf, "JPEG", quality=95)
                path.write_bytes(buf.getvalue())
            else:
                os.link(paths[i % unique], path)
        paths.append(path)
    return paths
