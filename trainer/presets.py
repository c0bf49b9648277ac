"""The one preprocessing function, shared by training and inference, driven by a manifest."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# We enforce our own pixel limit (a setting) before decoding, so Pillow's global one is off.
Image.MAX_IMAGE_PIXELS = None


class ImageRejected(ValueError):
    """An image that can't or mustn't be decoded; the message becomes the row's error."""


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open (not decode) an image, refusing empty files and ones over the pixel limit."""
    if not data:
        raise ImageRejected("empty file")
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as e:
        raise ImageRejected(f"not a readable image ({type(e).__name__})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageRejected(f"image is {w}x{h}, over the {max_pixels}-pixel limit")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: alpha composited on white, 16-bit scaled to 8-bit, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        shift = 8 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 0
        img = Image.fromarray((arr >> shift).clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def preprocess(data: bytes, spec: dict, *, max_pixels: int = 100_000_000) -> np.ndarray:
    """Image bytes -> (size, size, 3) uint8: resize shorter side, centre crop, as spec says."""
    size, resize = spec["input_size"], spec["resize_size"]
    img = open_image(data, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / palette warnings are not errors for us
            # JPEG draft: decode at the smallest 1/2^k scale still >= the resize target.
            img.draft("RGB", (resize, resize))
            img = to_rgb(ImageOps.exif_transpose(img))
            w, h = img.size
            scale = resize / min(w, h)
            # Crop box in source pixels, so one resize does resize + centre crop together.
            cw, ch = size / scale, size / scale
            left, top = (w - cw) / 2, (h - ch) / 2
            img = img.resize((size, size), Image.BILINEAR,
                             box=(left, top, left + cw, top + ch), reducing_gap=None)
            return np.asarray(img, dtype=np.uint8)
    except ImageRejected:
        raise
    except Exception as e:  # truncated, corrupt, unsupported: one row's error, not a crash
        raise ImageRejected(f"cannot decode image: {type(e).__name__}: {e}") from None
