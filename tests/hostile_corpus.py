"""Hostile images made on the fly, each with the outcome a scoring job must give it."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
from PIL import Image

SCORED = "scored"
RED, BLUE = (255, 0, 0), (0, 0, 255)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    """img saved in fmt (with Pillow's save params)."""
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def halves(size: tuple[int, int], left=RED, right=BLUE) -> Image.Image:
    """An RGB image whose left half is one colour and right half another."""
    w, h = size
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, w // 2, h))
    return img


def png_chunks(width: int, height: int, color_type: int, depth: int, idat: bytes) -> bytes:
    """A PNG file written by hand: any IHDR we like, over any (compressed) IDAT payload."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def png16_gray(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG of a uint16 array."""
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)
    return png_chunks(values.shape[1], values.shape[0], 0, 16, zlib.compress(rows))


def png16_rgb(values: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of a (h, w, 3) uint16 array."""
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)
    return png_chunks(values.shape[1], values.shape[0], 2, 16, zlib.compress(rows))


def bomb_png(side: int = 20_000) -> bytes:
    """A real decompression bomb: a side x side 1-bit PNG of zeros, about 50 KB on disk."""
    row = b"\0" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row * 1000) for _ in range(side // 1000)) + z.flush()
    return png_chunks(side, side, 0, 1, idat)


def huge_header_png(side: int = 100_000) -> bytes:
    """A tiny PNG whose header declares side x side RGB pixels."""
    return png_chunks(side, side, 2, 8, zlib.compress(b"\0" * 64))


def hollow_png(side: int = 8_000) -> bytes:
    """A tiny PNG declaring side x side RGB (under the pixel limit) with almost no data."""
    return png_chunks(side, side, 2, 8, zlib.compress(b"\0" * 64))


def cmyk_adobe_jpeg(rgb=RED, size=(64, 64)) -> bytes:
    """A CMYK JPEG as Photoshop writes it: Adobe APP14 marker, inverted CMYK values."""
    return encode(Image.new("RGB", size, rgb).convert("CMYK"), "JPEG", quality=95)


def cmyk_plain_jpeg(rgb=RED, size=(64, 64)) -> bytes:
    """A CMYK JPEG without the Adobe marker: plain (not inverted) CMYK values."""
    cmyk = Image.new("RGB", size, rgb).convert("CMYK")
    # Pillow writes CMYK inverted with an APP14 marker; pre-invert and drop the marker.
    inverted = Image.eval(cmyk, lambda v: 255 - v)
    return strip_segment(encode(inverted, "JPEG", quality=95), 0xEE)


def strip_segment(jpeg: bytes, marker: int) -> bytes:
    """A JPEG without its APPn segments of one marker (e.g. 0xEE, Adobe's APP14)."""
    out, i = bytearray(jpeg[:2]), 2
    while i < len(jpeg) and jpeg[i] == 0xFF and jpeg[i + 1] != 0xDA:
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if jpeg[i + 1] != marker:
            out += jpeg[i:i + 2 + length]
        i += 2 + length
    return bytes(out + jpeg[i:])


def exif_rotated_jpeg(orientation: int = 6, size=(200, 100)) -> bytes:
    """A landscape JPEG (left red, right blue) tagged with an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(halves(size), "JPEG", quality=95, exif=exif)


def animated_gif(first=RED, second=BLUE, size=(64, 64)) -> bytes:
    """A two-frame GIF: the first frame one colour, the second another."""
    frames = [Image.new("RGB", size, c).convert("P") for c in (first, second)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                  loop=0)


def palette_with_transparency() -> bytes:
    """A palette PNG whose index 0 is transparent."""
    img = halves((64, 64)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return encode(img, "PNG", transparency=0)


def truncated_jpeg() -> bytes:
    """The first third of a valid JPEG."""
    good = encode(halves((300, 200)), "JPEG", quality=90)
    return good[: len(good) // 3]


POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


def cases(max_pixels: int = 100_000_000) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected): SCORED, or a regex the row's error must match."""
    img = halves((96, 64))
    return {
        "postscript.jpg": (POSTSCRIPT, r"^not an image$"),
        "truncated.jpg": (truncated_jpeg(), r"^truncated image$"),
        "empty.jpg": (b"", r"^empty file$"),
        "text.jpg": (b"just some text, not a photo\n" * 3, r"^not an image$"),
        "page.png": (b"<!doctype html><html><body>404 Not Found</body></html>",
                     r"^not an image$"),
        "cmyk_adobe.jpg": (cmyk_adobe_jpeg(), SCORED),
        "cmyk_plain.jpg": (cmyk_plain_jpeg(), SCORED),
        "gray16.png": (png16_gray(np.full((40, 60), 40000, np.uint16)), SCORED),
        "rgb16.png": (png16_rgb(np.full((40, 60, 3), 50000, np.uint16)), SCORED),
        "palette_transparent.png": (palette_with_transparency(), SCORED),
        "rgba.png": (encode(img.convert("RGBA"), "PNG"), SCORED),
        "la.png": (encode(img.convert("LA"), "PNG"), SCORED),
        "bilevel.png": (encode(img.convert("1"), "PNG"), SCORED),
        "animated.gif": (animated_gif(), SCORED),
        "exif_rotated.jpg": (exif_rotated_jpeg(), SCORED),
        "one_pixel.png": (encode(Image.new("RGB", (1, 1), RED), "PNG"), SCORED),
        "strip_10000x10.png": (encode(halves((10_000, 10)), "PNG"), SCORED),
        "bomb.png": (bomb_png(), rf"^too many pixels: 400000000 > {max_pixels}$"),
        "huge_header.png": (huge_header_png(), rf"^too many pixels: 10000000000 > {max_pixels}$"),
        "hollow.png": (hollow_png(), r"^truncated image$"),
        "photo.tiff": (encode(img, "TIFF"), SCORED),
        "photo.webp": (encode(img, "WEBP", quality=90), SCORED),
        "photo.bmp": (encode(img, "BMP"), SCORED),
    }


def outcome_matches(row: dict, expected: str) -> bool:
    """True if a result row has the expected outcome."""
    if expected == SCORED:
        return row["error"] is None and row["label"] is not None
    return row["label"] is None and bool(re.search(expected, row["error"] or ""))
