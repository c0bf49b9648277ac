"""Photo-like JPEGs for benchmarks: a face on a noisy, textured background, about 1 MB at 2 MP."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

from facesense.synthetic import draw_photo


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
                draw_photo(rng, size).save(buf, "JPEG", quality=95)
                path.write_bytes(buf.getvalue())
            else:
                os.link(paths[i % unique], path)
        paths.append(path)
    return paths
