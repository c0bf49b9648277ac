"""JPEG decode + resize + centre crop: the engine's Pillow path against the alternatives.

`python -m bench.decode [--n 64] [--sizes 1600x1200,640x480,128x96]` measures, on the throughput
benchmark's photos, one core's images/s from JPEG bytes to the model's (224, 224, 3) uint8 input,
and how far each alternative's pixels are from the engine's (mean and largest |difference|, share
of pixels within 2 levels):

  pillow     the engine (runtime.preprocess.preprocess): Pillow draft (libjpeg-turbo DCT scaling)
             to the smallest 1/2^k scale >= the resize side, one bilinear resize of the crop box
  pillow-reduce  Pillow draft, then Image.reduce to just above the crop, then the same resize
  simplejpeg     simplejpeg (libjpeg-turbo) scaled decode to a numpy array, then the same resize
  simplejpeg-fast  the same with simplejpeg's defaults: fast integer DCT and fast upsampling
  pyvips         pyvips thumbnail_buffer (shrink-on-load, then its own resize and centre crop)

simplejpeg and pyvips are optional (`pip install .[bench]`); missing ones are reported as such.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import OUT, machine
from bench.photos import make_photos
from runtime.preprocess import decode, preprocess, spec_for

SPEC = spec_for(224, 256)


def crop_resize(img: Image.Image, spec: dict) -> np.ndarray:
    """The engine's geometry: one bilinear resize of the centre crop box (as preprocess does)."""
    size, resize = spec["input_size"], spec["resize_size"]
    w, h = img.size
    scale = resize / min(w, h)
    cw, ch = min(size / scale, w), min(size / scale, h)
    left, top = max(0.0, (w - cw) / 2), max(0.0, (h - ch) / 2)
    return np.asarray(img.resize((size, size), Image.BILINEAR,
                                 box=(left, top, left + cw, top + ch), reducing_gap=None))


def pillow_reduce(data: bytes, spec: dict) -> np.ndarray:
    """Draft, then an integer box reduce to just above the crop side, then the resize."""
    img = decode(data, max_pixels=10**9, draft=spec["resize_size"])
    factor = int(min(img.size) / spec["resize_size"])
    if factor >= 2:
        img = img.reduce(factor)
    return crop_resize(img, spec)


def simplejpeg_path(data: bytes, spec: dict, fast: bool = False) -> np.ndarray:
    """libjpeg-turbo's scaled decode straight to an array, then the engine's resize (fast: its
    default fast DCT and upsampling, which Pillow does not use)."""
    import simplejpeg
    side = spec["resize_size"]
    arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=side, min_width=side,
                                 fastdct=fast, fastupsample=fast)
    return crop_resize(Image.fromarray(arr), spec)


def pyvips_path(data: bytes, spec: dict) -> np.ndarray:
    """libvips: shrink-on-load and resize to the resize side, then crop the centre."""
    import pyvips
    size, resize = spec["input_size"], spec["resize_size"]
    img = pyvips.Image.thumbnail_buffer(data, 10**6, height=resize, size="both")
    if min(img.width, img.height) != resize:  # thumbnail fits the height: refit the short side
        img = pyvips.Image.thumbnail_buffer(data, resize, height=10**6, size="both")
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.ndarray(buffer=img.crop(left, top, size, size).write_to_memory(),
                      dtype=np.uint8, shape=(size, size, img.bands))[..., :3]


PATHS = {"pillow": lambda d, s: preprocess(d, s), "pillow-reduce": pillow_reduce,
         "simplejpeg": simplejpeg_path,
         "simplejpeg-fast": lambda d, s: simplejpeg_path(d, s, fast=True), "pyvips": pyvips_path}


def measure(files: list[bytes]) -> dict:
    """images/s on one core and pixel differences from the engine, for every path."""
    reference = [preprocess(d, SPEC).astype(np.int16) for d in files]
    out = {}
    for name, fn in PATHS.items():
        try:
            fn(files[0], SPEC)
        except ImportError as e:
            out[name] = {"missing": str(e)}
            continue
        start = time.perf_counter()
        arrays = [fn(d, SPEC) for d in files]
        rate = len(files) / (time.perf_counter() - start)
        diff = np.abs(np.stack(arrays).astype(np.int16) - np.stack(reference))
        out[name] = {"images_per_s": round(rate, 1), "mean_abs_diff": round(float(diff.mean()), 3),
                     "max_abs_diff": int(diff.max()),
                     "within_2": round(float((diff <= 2).mean()), 4)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="distinct photos per size (default 64)")
    p.add_argument("--sizes", default="1600x1200,640x480,128x96")
    p.add_argument("--dir", help="working folder (default: a temp folder)")
    args = p.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="facesense-decode-"))
    result = {"machine": machine(), "sizes": {}}
    for size in args.sizes.split(","):
        w, h = map(int, size.split("x"))
        paths = make_photos(base / f"photos-{size}", args.n, (w, h), unique=args.n)
        result["sizes"][size] = figures = measure([p.read_bytes() for p in paths])
        print(size, json.dumps(figures), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "decode.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
