"""Images for tests, made on the fly: varied sizes, formats and modes, plus corrupt files."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from facesense.synthetic import backdrop, encode

MODES = ("RGB", "L", "RGBA")


def make_image(rng: random.Random, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A smooth gradient with a few shapes: cheap to encode, not trivially constant."""
    w, h = size
    img = backdrop(rng, size)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(1, max(2, w // 2)), y0 + rng.randrange(1, max(2, h // 2))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    return img.convert(mode)


def corrupt_files() -> dict[str, bytes]:
    """Three unreadable files named like images: truncated JPEG, text as PNG, empty JPEG."""
    good = encode(make_image(random.Random(1), (300, 200)), "JPEG")
    return {"truncated.jpg": good[: len(good) // 3], "notes.png": b"this is not a png\n",
            "empty.jpeg": b""}


def make_folder(root: Path, n: int, groups: tuple[str, ...] = ("variant_a", "variant_b"),
                seed: int = 0, min_side: int = 64, max_side: int = 2000,
                corrupt: bool = True) -> dict[str, int]:
    """n images (JPEG and PNG, RGB / L / RGBA) split over group sub-folders, plus 3 corrupt
    files in the first group; returns the number of files per group."""
    rng = random.Random(seed)
    counts = dict.fromkeys(groups, 0)
    for i in range(n):
        group = groups[i % len(groups)]
        size = (rng.randint(min_side, max_side), rng.randint(min_side, max_side))
        mode = MODES[i % len(MODES)]
        fmt = "PNG" if mode == "RGBA" or i % 4 == 1 else "JPEG"
        ext = {"JPEG": rng.choice([".jpg", ".JPG", ".jpeg"]), "PNG": ".png"}[fmt]
        path = root / group / f"img{i:04d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(make_image(rng, size, mode), fmt))
        counts[group] += 1
    if corrupt:
        for name, data in corrupt_files().items():
            (root / groups[0] / name).write_bytes(data)
            counts[groups[0]] += 1
    (root / groups[0] / "README.txt").write_text("not an image: ignored")
    return counts


def upload_folder(client, bucket: str, prefix: str, root: Path) -> int:
    """Copy a folder to S3 under prefix; returns the object count."""
    n = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}",
                              Body=path.read_bytes())
            n += 1
    return n
