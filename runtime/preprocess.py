"""The one preprocessing function, shared by training and inference, driven by a manifest."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps

# The guards (formats, pixel limit, PNG bombs) live in the core, shared with the API's
# on-demand thumbnails; they are re-exported here for the worker and the trainer.
from facesense.imaging import FORMATS, ImageRejected, flatten_to_rgb, open_image  # noqa: F401
from facesense.registry import DEFAULT_PREPROCESS, resize_for


def plain_jpeg(img: Image.Image, data: bytes) -> bool:
    """True for a complete colour or grey JPEG: one a GPU decoder gets right (CMYK needs
    to_rgb's polarity fix; a file cut before its end marker must fail, not be grey-padded)."""
    return (img.format == "JPEG" and img.mode in ("RGB", "L")
            and data.rstrip(b"\0").endswith(b"\xff\xd9"))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: alpha composited on white, 16-bit scaled (not clipped) to 8-bit,
    CMYK JPEGs without Adobe's marker un-inverted."""
    if img.mode.startswith("I"):  # I;16* from 16-bit PNG / TIFF; I (32-bit) from other files
        arr = np.asarray(img).clip(0, 65535).astype(np.uint32)  # 4 bytes a pixel, no overflow
        if img.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = (arr * 255 + 32767) // 65535  # 65535 -> 255, 32768 -> 128
        img = Image.fromarray(arr.astype(np.uint8), "L")
    return flatten_to_rgb(img)


def decode(data: bytes, *, max_pixels: int, draft: int | None = None) -> Image.Image:
    """Image bytes -> upright RGB image (EXIF orientation applied, first frame of animations).

    draft: JPEGs are decoded at the smallest 1/2^k scale whose sides stay >= it.
    """
    img = open_image(data, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / palette warnings are not errors for us
            if draft:
                img.draft("RGB", (draft, draft))
            img.load()  # decode here, so a bad file fails with a reason of its own
            # In place: a copy would lose img.format, which to_rgb's CMYK check needs.
            ImageOps.exif_transpose(img, in_place=True)
            return to_rgb(img)
    except (EOFError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, EOFError) or "truncated" in str(e).lower():
            raise ImageRejected("truncated image") from None
        raise ImageRejected(f"cannot decode image: {e}") from None
    except Exception as e:  # corrupt or unsupported: one row's error, never a crash
        raise ImageRejected(f"cannot decode image: {type(e).__name__}: {e}") from None


def preprocess(data: bytes, spec: dict, *, max_pixels: int = 100_000_000,
               crop: int | None = None,
               on_decoded: Callable[[Image.Image], None] | None = None) -> np.ndarray:
    """Image bytes -> (size, size, 3) uint8: resize shorter side, centre crop, as spec says.

    crop overrides the crop side: training keeps resize_size squares and crops them at random.
    on_decoded, if given, also gets the upright RGB image before the resize (thumbnails).
    """
    img = decode(data, max_pixels=max_pixels, draft=spec["resize_size"])
    if on_decoded:
        on_decoded(img)
    return fit(img, spec, crop=crop)


def fit(img: Image.Image, spec: dict, *, crop: int | None = None) -> np.ndarray:
    """An upright RGB image (a whole photo or a face's square) -> (size, size, 3) uint8."""
    size, resize = crop or spec["input_size"], spec["resize_size"]
    w, h = img.size
    scale = resize / min(w, h)
    # Crop box in source pixels, so one resize does resize + centre crop together.
    cw, ch = min(size / scale, w), min(size / scale, h)
    left, top = max(0.0, (w - cw) / 2), max(0.0, (h - ch) / 2)  # no float overshoot
    img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch),
                     reducing_gap=None)
    if spec.get("grayscale"):  # ITU-R 601 luma, as OpenCV's BGR2GRAY; 3 equal channels
        img = img.convert("L").convert("RGB")
    return np.asarray(img, dtype=np.uint8)


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
            "resize_size": resize_size or resize_for(image_size)}
