"""The one preprocessing function, shared by training and inference, driven by a manifest."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from facesense.registry import DEFAULT_PREPROCESS

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


def preprocess(data: bytes, spec: dict, *, max_pixels: int = 100_000_000,
               crop: int | None = None) -> np.ndarray:
    """Image bytes -> (size, size, 3) uint8: resize shorter side, centre crop, as spec says.

    crop overrides the crop side: training keeps resize_size squares and crops them at random.
    """
    size, resize = crop or spec["input_size"], spec["resize_size"]
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
            cw, ch = min(size / scale, w), min(size / scale, h)
            left, top = max(0.0, (w - cw) / 2), max(0.0, (h - ch) / 2)  # no float overshoot
            img = img.resize((size, size), Image.BILINEAR,
                             box=(left, top, left + cw, top + ch), reducing_gap=None)
            return np.asarray(img, dtype=np.uint8)
    except ImageRejected:
        raise
    except Exception as e:  # truncated, corrupt, unsupported: one row's error, not a crash
        raise ImageRejected(f"cannot decode image: {type(e).__name__}: {e}") from None


def normalize(batch: torch.Tensor, spec: dict, device: torch.device) -> torch.Tensor:
    """uint8 NHWC batch -> normalised float NCHW (channels-last) on device, as spec says."""
    if device.type == "cuda" and batch.device.type == "cpu":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    mean = torch.tensor(spec["mean"], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec["std"], device=device).view(1, 3, 1, 1) * 255
    x = batch.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


def spec_for(image_size: int, resize_size: int | None = None) -> dict:
    """A preprocessing spec for a square input side (ImageNet normalisation)."""
    return {**DEFAULT_PREPROCESS, "input_size": image_size,
            "resize_size": resize_size or round(image_size * 8 / 7)}
