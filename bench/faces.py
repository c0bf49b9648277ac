"""Faces: the two detectors compared on real photos, and scoring with faces on and off.

`python -m bench.faces [--n 64] [--out bench/out/faces.json]` measures, in one run:

  detectors: MTCNN (facenet-pytorch) and OpenCV's Haar cascade (opencv-python-headless 4.x, the
    `bench` extra) on the test set of tests/test_faces.py: recall on its 20 real faces (the
    astronaut and six group photos of LFW faces), finds on its 10 face-free scenes, and the
    seconds per photo at 640x480 and 1600x1200 (each detector's own downscale: MTCNN's is the
    engine's FACESENSE_FACE_DETECT_SIDE copy; Haar's is the same copy, in grey);
  scoring: the engine (worker.inference.score) on n group photos at each size, images/s with
    faces off and on, and the detection stage alone (decode excluded) in images/s.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.face_photos import astronaut, face_free, group_photo, group_set, matched
from runtime.device import default_threads
from runtime.faces import FaceDetector, FaceOptions, _downscaled, cut_faces
from runtime.network import build_alexnet
from runtime.preprocess import spec_for
from runtime.serving import LoadedModel
from worker.inference import score

OUT = Path(__file__).parent / "out"
SIZES = ((640, 480), (1600, 1200))


class Haar:
    """OpenCV's frontal-face cascade, tuned as its documentation shows (scale 1.1, 5 neighbours)."""

    def __init__(self, options: FaceOptions):
        import cv2
        self.cv2, self.options = cv2, options
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades
                                             + "haarcascade_frontalface_default.xml")

    def detect(self, images: list[Image.Image], options: FaceOptions) -> list[list[tuple]]:
        out = []
        for img in images:
            scale = options.detect_scale(img)
            grey = np.asarray(_downscaled(img, scale).convert("L"))
            least = max(24, int(options.min_size * scale))
            found = self.cascade.detectMultiScale(grey, 1.1, 5, minSize=(least, least))
            out.append([tuple(int(v / scale) for v in (x, y, x + w, y + h)) for x, y, w, h in found])
        return out


def mtcnn_boxes(detector: FaceDetector):
    return lambda images, options: [[f.box for f in faces]
                                    for faces in detector.detect(images, options)]


def compare_detectors(detectors: dict, options: FaceOptions) -> dict:
    """Recall and false finds on the test set, and seconds per photo at each size."""
    truth = [("astronaut", astronaut(), [(170, 40, 280, 180)]), *group_set()]
    scenes = list(face_free().values())
    timed = {size: [group_photo(200 + i, 3, size)[0] for i in range(4)] for size in SIZES}
    out = {}
    for name, detect in detectors.items():
        detect([astronaut()], options)  # warm-up
        found = [detect([img], options)[0] for _, img, _ in truth]
        hits = sum(matched(boxes, f) for (_, _, boxes), f in zip(truth, found, strict=True))
        total = sum(len(boxes) for _, _, boxes in truth)
        finds = sum(len(detect([s], options)[0]) for s in scenes)
        seconds = {}
        for size, photos in timed.items():
            start = time.perf_counter()
            for photo in photos:
                detect([photo], options)
            seconds[f"{size[0]}x{size[1]}"] = round((time.perf_counter() - start) / len(photos), 4)
        out[name] = {"recall": round(hits / total, 3), "faces": total, "found": hits,
                     "false_finds_on_10_scenes": finds, "seconds_per_photo": seconds}
    return out


def scoring_rates(n: int, detector: FaceDetector, options: FaceOptions) -> dict:
    """Images/s of the engine with faces off and on, and of detection alone, per size."""
    torch.manual_seed(0)
    loaded = LoadedModel("bench", ["happy", "sad"], spec_for(224), build_alexnet(2).eval(),
                         torch.device("cpu"), "fp32")
    cut = partial(cut_faces, detector=detector, options=options)
    out = {}
    for size in SIZES:
        photos = [group_photo(300 + i, 1 + i % 4, size) for i in range(min(n, 16))]
        data = {}
        for i in range(n):
            buf = io.BytesIO()
            photos[i % len(photos)][0].save(buf, "JPEG", quality=90)
            data[f"g{i % 2}/p{i}.jpg"] = buf.getvalue()
        keys = list(data)

        def run(faces, keys=keys, data=data):
            start = time.perf_counter()
            rows = list(score(keys, loaded, lambda k, _limit: data[k], batch_size=64,
                              threads=default_threads(), max_pixels=10**9, max_bytes=10**9,
                              faces=faces))
            return len(keys) / (time.perf_counter() - start), rows

        run(None)  # warm-up
        off, _ = run(None)
        on, rows = run(cut)
        decoded = [photo for photo, _ in photos]
        start = time.perf_counter()
        for i in range(0, n, 16):
            detector.detect([decoded[j % len(decoded)] for j in range(i, min(n, i + 16))], options)
        detect_rate = n / (time.perf_counter() - start)
        out[f"{size[0]}x{size[1]}"] = {
            "images": n, "faces_found": sum(1 for r in rows if r.get("face") is not None),
            "faces_off_images_per_s": round(off, 1), "faces_on_images_per_s": round(on, 1),
            "detection_alone_images_per_s": round(detect_rate, 1),
            "on_over_off": round(on / off, 3)}
    return out


def cpu_model() -> str:
    """The CPU's model name and whether it has native bf16 (from /proc/cpuinfo on Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())
    return name + (", avx512_bf16" if "avx512_bf16" in info else ", no avx512_bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="photos per size for the scoring rates")
    parser.add_argument("--out", type=Path, default=OUT / "faces.json")
    args = parser.parse_args()
    options = FaceOptions()
    detector = FaceDetector("cpu")
    detectors = {"mtcnn": mtcnn_boxes(detector)}
    try:
        detectors["haar"] = Haar(options).detect
    except ImportError:  # opencv-python-headless comes with the bench extra
        print("opencv-python-headless is not installed (pip install -e '.[bench]'): MTCNN only")
    report = {"machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "options": options.__dict__,
              "detectors": compare_detectors(detectors, options),
              "scoring": scoring_rates(args.n, detector, options)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
