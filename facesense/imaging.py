"""The image-safety guards every decoder shares: formats by content, a pixel limit, PNG bombs.

Torch-free, so the API (on-demand gallery thumbnails) refuses exactly what a worker refuses.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

# We enforce our own pixel limit (a setting) before decoding, so Pillow's global one is off.
# Pillow's ImageFile.LOAD_TRUNCATED_IMAGES must stay False: a cut-off file is an error row,
# never a silently grey-padded image (tests/test_hostile.py checks it).
Image.MAX_IMAGE_PIXELS = None

# Formats we decode, by content (never by file name): a PostScript, PSD or ICO file named .jpg
# is "not an image" rather than handed to a rarely exercised (or external: EPS) decoder.
# (Multi-picture JPEGs, MPO, open through the JPEG plugin.)
FORMATS = ("JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP")
Image.init()  # register every plugin now: Image.open(formats=...) only tries loaded ones

# Deflate packs at most 1032 bytes into one, so a PNG declaring more raw pixel data than that
# times its file size cannot hold its pixels: refused before Pillow allocates the image.
DEFLATE_MAX_RATIO = 1032
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel


class ImageRejected(ValueError):
    """An image that can't or mustn't be decoded; the message becomes the row's error."""


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open (read the header, decode nothing) an image, refusing what must not be decoded."""
    if not data:
        raise ImageRejected("empty file")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected("not an image") from None
    except Exception as e:  # a known format with a malformed header
        raise ImageRejected(f"corrupt image header ({type(e).__name__})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageRejected(f"too many pixels: {w * h} > {max_pixels}")
    if img.format == "PNG" and png_raw_bytes(data) > DEFLATE_MAX_RATIO * len(data):
        raise ImageRejected("truncated image")
    return img


def png_raw_bytes(data: bytes) -> int:
    """The uncompressed pixel bytes a PNG's IHDR declares (0 if it can't be read)."""
    if data[12:16] != b"IHDR" or len(data) < 26:
        return 0
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, channels = data[24], PNG_CHANNELS.get(data[25], 1)
    return h * (1 + (w * channels * depth + 7) // 8)


def flatten_to_rgb(img: Image.Image) -> Image.Image:
    """RGB from an 8-bit image of any mode: alpha composited on white, CMYK JPEGs without
    Adobe's marker un-inverted (callers bring 16-bit images down to 8 bits first)."""
    if img.mode == "CMYK" and img.format == "JPEG" and "adobe" not in img.info:
        # Pillow reads every CMYK JPEG with Adobe's inverted polarity; without the APP14
        # marker the values are plain CMYK, so undo the inversion.
        img = Image.eval(img, lambda v: 255 - v)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def face_square(box, size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """A square around a face's box [x0, y0, x1, y1], grown by margin (a share of its longer
    side) on each side, moved (then cut) to fit in an image of this size."""
    x0, y0, x1, y1 = box
    side = min(round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)), size[0], size[1])
    left = min(max(0, round((x0 + x1 - side) / 2)), size[0] - side)
    top = min(max(0, round((y0 + y1 - side) / 2)), size[1] - side)
    return left, top, left + side, top + side
