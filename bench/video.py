"""Reaction videos' speed: the engine's video path against the loop a Python user would write.

`python -m bench.video [--seconds 60] [--long-minutes 10] [--out bench/out/video.json]`

A 640x480, 30 fps webcam-like video of one face (scikit-image's astronaut, moving a little over
its `coffee` scene: bench/webcam.py) is encoded here with PyAV (H.264). Measured in one run, on
the same machine and model (AlexNet at 224 px, fp32, random weights: the speed does not depend
on them):

  engine     worker.video.video_rows: frames sampled by time (seek, decode forward, convert only
             the kept frames), fit and, with faces, detected in batches, decoding in a thread
             while the model runs
  naive      a PyAV loop decoding every frame, keeping every Nth, converting it, and calling the
             model one frame at a time; with faces, facenet-pytorch's MTCNN class on each kept
             frame (the engine's face settings) and the model on each face's crop
  naive_own  (faces) the same loop with the engine's own detector, one frame a call: how much
             of the engine's lead is batching and pipelining alone
  stages     the engine's stages timed apart on the same frames: decode + sample, fit, detect,
             forward (their shares of the stages' sum; pipelined, the engine overlaps them)
  decoders   decode + sample alone: PyAV (the engine's sampler, and an every-Nth loop) and
             torchcodec (get_frames_played_at) when it is importable
  workers    a long video (--long-minutes, at --long-fps) scored through the API by 1 and by 2 worker
             processes (each pinned to a core, as bench.scaling does), and each worker's peak RSS
             for that video and for a 1-minute one

at video_fps 5 and 30, faces on and off (each rate on --frames sampled frames, a fifth of them
with faces: the detector is slow on a CPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from bench.common import OUT, machine
from bench.video_workers import workers_figures
from bench.webcam import RATE, SIZE, make_video
from facesense.inputs.video.frames import sample
from facesense.inputs.video.limits import VideoLimits
from facesense.inputs.video.probe import probe
from runtime.faces import (
    MTCNN_STAGE_THRESHOLDS,
    Face,
    FaceDetector,
    FaceOptions,
    crop_face,
    cut_faces,
    face_copy,
)
from runtime.network import build_alexnet
from runtime.preprocess import fit, spec_for
from runtime.serving import LoadedModel, forward
from worker.video import video_rows


def engine(path: Path, loaded: LoadedModel, fps: float, frames: int, faces) -> float:
    """Sampled frames/s of the engine's video path on the first `frames` samples."""
    info = probe(path, VideoLimits())
    plan = {"video": path.name, "info": info.__dict__, "fps": fps, "k0": 0, "k1": frames, "t0": 0}
    start = time.perf_counter()
    rows = list(video_rows(plan, loaded, _Folder(path.parent), batch_size=64, faces=faces))
    assert {r["frame"] for r in rows} == set(range(frames)), "every sample scored"
    return round(frames / (time.perf_counter() - start), 1)


class _Folder:
    """The video's folder as a store (open only: all the engine reads)."""

    def __init__(self, root: Path):
        self.root = root

    def open(self, key: str, start: int = 0):
        f = (self.root / key).open("rb")
        f.seek(start)
        return f


def naive(path: Path, loaded: LoadedModel, fps: float, frames: int, cut=None) -> float:
    """Sampled frames/s of the every-Nth-frame loop, one model (and detector) call per frame;
    cut(image) gives a frame's face inputs."""
    every, kept = round(RATE / fps), 0
    start = time.perf_counter()
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every:
                continue
            image = frame.to_image()
            for pixels in cut(image) if cut else [fit(image, loaded.spec)]:
                forward(loaded, pixels[None])
            kept += 1
            if kept == frames:
                break
    return round(kept / (time.perf_counter() - start), 1)


def library_cut(spec: dict, options: FaceOptions):
    """What a Python user would write for faces: facenet-pytorch's MTCNN, one frame a call."""
    from facenet_pytorch import MTCNN
    found = MTCNN(keep_all=True, min_face_size=options.min_size, device="cpu",
                  thresholds=[*MTCNN_STAGE_THRESHOLDS[:2], options.threshold])

    def cut(image: Image.Image) -> list[np.ndarray]:
        boxes, _ = found.detect(image)
        return [fit(crop_face(image, Face(tuple(int(v) for v in box), 1.0), options.margin), spec)
                for box in ([] if boxes is None else boxes)]
    return cut


def stages(path: Path, loaded: LoadedModel, fps: float, frames: int, cut) -> dict:
    """Seconds per sampled frame of each stage, timed apart, and each one's share of their sum."""
    info, spent = probe(path, VideoLimits()), {}
    start = time.perf_counter()
    images = [s.image for s in sample(path, info, fps, 0, frames)]
    spent["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    if cut:
        copies = [face_copy(img)[0] for img in images]
        found = [f for i in range(0, len(copies), 16) for f in cut(copies[i:i + 16], loaded.spec)]
        inputs = [pixels for faces in found for _, pixels in faces]
        spent["detect"] = time.perf_counter() - start
    else:
        inputs = [fit(img, loaded.spec) for img in images]
        spent["fit"] = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(inputs), 64):
        forward(loaded, np.stack(inputs[i:i + 64]))
    spent["forward"] = time.perf_counter() - start
    total = sum(spent.values())
    return {name: {"ms_per_frame": round(1000 * s / frames, 2), "share": round(s / total, 3)}
            for name, s in spent.items()}


def decoders(path: Path, fps: float, frames: int) -> dict:
    """Sampled frames/s of decode + sample alone, per decoder."""
    info, out = probe(path, VideoLimits()), {}
    start = time.perf_counter()
    n = sum(1 for _ in sample(path, info, fps, 0, frames))
    out["pyav_sampler"] = round(n / (time.perf_counter() - start), 1)
    start, kept = time.perf_counter(), 0
    with av.open(str(path)) as container:
        container.streams.video[0].thread_type = "AUTO"
        for i, frame in enumerate(container.decode(video=0)):
            if i % round(RATE / fps) == 0:
                frame.to_ndarray(format="rgb24")
                kept += 1
                if kept == frames:
                    break
    out["pyav_every_nth"] = round(kept / (time.perf_counter() - start), 1)
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as e:  # not installed, or FFmpeg's shared libraries missing
        out["torchcodec"] = f"not measured: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
        return out
    for mode in ("exact", "approximate"):
        start = time.perf_counter()
        decoder = VideoDecoder(str(path), seek_mode=mode)
        times = [k / fps for k in range(frames)]
        n = sum(decoder.get_frames_played_at(times[i:i + 64]).data.shape[0]
                for i in range(0, frames, 64))
        out[f"torchcodec_{mode}"] = round(n / (time.perf_counter() - start), 1)
    return out


def per_frame_figures(path: Path, frames: int) -> dict:
    """Engine vs naive loop, stage shares and decoders, at 5 and 30 fps, faces off and on."""
    torch.manual_seed(0)
    loaded = LoadedModel("bench", ["happy", "sad"], spec_for(224), build_alexnet(2).eval(),
                         torch.device("cpu"), "fp32")
    detector, options = FaceDetector("cpu"), FaceOptions()
    cut = partial(cut_faces, detector=detector, options=options)
    library = library_cut(loaded.spec, options)
    forward(loaded, np.zeros((8, 224, 224, 3), np.uint8))  # warm-up
    out = {}
    for fps in (5, 30):
        for faces in (False, True):
            name = f"fps{fps}_{'faces' if faces else 'frames'}"
            n = frames if not faces else max(8, frames // 5)  # the detector is the slow part
            got = {"frames": n, "engine": engine(path, loaded, fps, n, cut if faces else None),
                   "naive": naive(path, loaded, fps, n, library if faces else None)}
            if faces:
                got["naive_own"] = naive(path, loaded, fps, n, lambda img: [
                    pixels for _, pixels in cut([img], loaded.spec)[0]])
                got["ratio_own"] = round(got["engine"] / got["naive_own"], 2)
            got["stages"] = stages(path, loaded, fps, n, cut if faces else None)
            got["ratio"] = round(got["engine"] / got["naive"], 2)
            out[name] = got
            print(name, json.dumps(got), flush=True)
        out[f"decoders_fps{fps}"] = decoders(path, fps, frames)
        print(f"decoders fps {fps}", json.dumps(out[f"decoders_fps{fps}"]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="the per-frame video's length")
    parser.add_argument("--frames", type=int, default=120, help="sampled frames per rate (0: "
                        "only the workers' runs)")
    parser.add_argument("--long-minutes", type=float, default=10)
    parser.add_argument("--long-fps", type=float, default=5, help="video_fps of the workers' runs")
    parser.add_argument("--out", default=str(OUT / "video.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        figures = {"machine": machine(), "video": f"{SIZE[0]}x{SIZE[1]} {RATE} fps H.264, one face"}
        if args.frames:
            figures.update(per_frame_figures(make_video(base / "webcam.mp4", args.seconds),
                                             args.frames))
        if args.long_minutes:
            figures["workers"] = workers_figures(base, args.long_minutes, args.long_fps)
    print(json.dumps(figures, indent=2))
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
