"""The one synthetic image generator, for the demo, the benchmarks and the tests.

Faces (`happy` smiles, `sad` frowns) vary in size, position, rotation, skin and background
colour, noise, grayscale or colour and JPEG quality; `make_campaign` builds ad-variant folders
whose happy shares are known; `draw_photo` pastes a face on a photo-like background.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SKIN = [(255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
        (92, 51, 23)]
CAMPAIGN_SHARES = {"variant_a": 0.8, "variant_b": 0.5, "variant_c": 0.2}


def draw_face(rng: random.Random, happy: bool, size: int | None = None) -> Image.Image:
    """One face photo: an oval head with eyes, brows and a smiling or frowning mouth."""
    side = size or rng.randint(96, 320)
    w, h = side, int(side * rng.uniform(0.8, 1.25))
    bg = tuple(rng.randrange(256) for _ in range(3))
    img = Image.new("RGB", (w * 2, h * 2), bg)  # drawn at 2x, then shrunk: anti-aliased edges
    d = ImageDraw.Draw(img)
    fw, fh = w * 2 * rng.uniform(0.55, 0.8), h * 2 * rng.uniform(0.6, 0.85)
    cx = w + rng.uniform(-0.1, 0.1) * w * 2
    cy = h + rng.uniform(-0.08, 0.08) * h * 2
    skin = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in rng.choice(SKIN))
    d.ellipse((cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2), fill=skin)
    ink = tuple(max(0, c - 120) for c in skin)
    eye_dx, eye_y, eye_r = fw * rng.uniform(0.17, 0.24), cy - fh * 0.12, fw * 0.05
    line = max(3, int(fw * rng.uniform(0.04, 0.06)))
    for sx in (-1, 1):
        ex = cx + sx * eye_dx
        d.ellipse((ex - eye_r, eye_y - eye_r, ex + eye_r, eye_y + eye_r), fill=ink)
        # Brows: raised arches when happy; slanted up towards the nose when sad.
        inner, outer = ex - sx * eye_r * 1.8, ex + sx * eye_r * 1.8
        by = eye_y - eye_r * 2.6
        if happy:
            d.arc((min(inner, outer), by - eye_r, max(inner, outer), by + eye_r * 1.5), 200, 340,
                  fill=ink, width=line // 2 + 1)
        else:
            d.line((inner, by - eye_r * 1.2, outer, by + eye_r * 0.6), fill=ink,
                   width=line // 2 + 1)
    mw, mh, my = fw * rng.uniform(0.38, 0.55), fh * rng.uniform(0.14, 0.24), cy + fh * 0.2
    box = (cx - mw / 2, my - mh, cx + mw / 2, my + mh)
    if happy:  # the lower half of an ellipse: a smile
        d.arc(box, 15, 165, fill=ink, width=line)
    else:  # the upper half, lower down: a frown
        d.arc((box[0], box[1] + mh, box[2], box[3] + mh), 195, 345, fill=ink, width=line)
    img = img.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR, fillcolor=bg)
    img = img.resize((w, h), Image.LANCZOS)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    noise = Image.effect_noise((w, h), rng.uniform(5, 30)).convert("RGB")
    img = Image.blend(img, noise, rng.uniform(0.0, 0.15))
    return img.convert("L") if rng.random() < 0.25 else img


def backdrop(rng: random.Random, size: tuple[int, int], tint: float = 0.5) -> Image.Image:
    """A grey gradient blended with a random colour: cheap to draw, not constant."""
    w, h = size
    gradient = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    colour = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    return Image.blend(gradient, colour, tint)


def draw_photo(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A face pasted on a backdrop with sensor-like noise (so JPEG sizes look like photos')."""
    w, h = size
    noise = Image.effect_noise((w // 2, h // 2), 40).resize((w, h)).convert("RGB")
    img = Image.blend(backdrop(rng, size, 0.6), noise, 0.25)
    face = draw_face(rng, rng.random() < 0.5, size=min(w, h) // 2).convert("RGB")
    img.paste(face, (rng.randrange(w - face.width), rng.randrange(h - face.height)))
    fine = Image.effect_noise((w, h), 60).convert("RGB")
    return Image.blend(img, fine, 0.2)


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 85) -> bytes:
    """JPEG (alpha dropped first) or another format's bytes."""
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    img.save(buf, fmt, quality=quality) if fmt == "JPEG" else img.save(buf, fmt)
    return buf.getvalue()


def jpeg(img: Image.Image, rng: random.Random) -> bytes:
    """JPEG bytes at a random quality."""
    return encode(img, "JPEG", quality=rng.randint(40, 95))


def make_dataset(root: Path, per_class: int = 300, seed: int = 0) -> dict[str, int]:
    """An ImageFolder dataset: root/happy/*.jpg and root/sad/*.jpg."""
    rng = random.Random(seed)
    counts = {}
    for label in ("happy", "sad"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / label / f"{label}_{i:05d}.jpg").write_bytes(
                jpeg(draw_face(rng, label == "happy"), rng))
        counts[label] = per_class
    return counts


def make_campaign(root: Path, per_variant: int = 40, seed: int = 1,
                  shares: dict[str, float] = CAMPAIGN_SHARES) -> dict[str, float]:
    """Ad-variant folders with known happy shares; returns {variant: true happy share}."""
    rng = random.Random(seed)
    truth = {}
    for variant, share in shares.items():
        (root / variant).mkdir(parents=True, exist_ok=True)
        n_happy = round(per_variant * share)
        labels = [True] * n_happy + [False] * (per_variant - n_happy)
        rng.shuffle(labels)
        for i, happy in enumerate(labels):
            (root / variant / f"shot_{i:04d}.jpg").write_bytes(jpeg(draw_face(rng, happy), rng))
        truth[variant] = n_happy / per_variant
    (root / "truth.json").write_text(json.dumps(truth, indent=2))
    return truth


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "var/demo")
    print(make_dataset(out / "faces"), make_campaign(out / "campaign"))
