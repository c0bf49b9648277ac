"""Reaction videos' speed: the engine's video path against the loop a Python user would write.

`python -m bench.video [--seconds 60] [--long-minutes 10] [--dir D] [--out bench/out/video.json]`

A 640x480, 30 fps webcam-like video of one face (scikit-image's astronaut, moving a little over
its `coffee` scene: bench/webcam.py) is encoded here with PyAV (H.264). The model is
bench.throughput's: AlexNet trained at 224 px and registered as a worker registers a version
(its reduced precisions' agreement with fp32 measured; trained once into --dir). Measured in one
run, on the same machine and model:

  engine     worker.video.video_rows as a worker runs it: the version loaded by the worker's
             model cache (precision auto: a reduced precision only where the version's record
             says it agrees and it measures faster here), frames sampled by time (seek, decode
             forward, convert only the kept frames), fit and, with faces, found by the worker's
             face follower (full detection every FACESENSE_VIDEO_FACE_DETECT_SECONDS, each face
             followed in between) in batches, decoding in a thread while the model runs
  engine_fp32  the same at fp32: how much of the lead is the precision
  naive      a PyAV loop decoding every frame, keeping every Nth, and calling the fp32 model one
             frame at a time on torchvision's evaluation transform (bench.throughput's (a));
             with faces, facenet-pytorch's MTCNN class on each kept frame (the engine's face
             settings) and the model on each face's crop
  naive_fit  the naive loop with the engine's own fit instead of torchvision's transform
  naive_own  (faces) the naive loop with the engine's own detector, a full detection a frame
  stages     the engine's stages timed apart on the same frames: decode + sample, fit or
             detect (+ cut and fit), forward (their shares of the stages' sum)
  decoders   decode + sample alone: PyAV (the engine's sampler, and an every-Nth loop) and
             torchcodec (get_frames_played_at) when it is importable
  workers    a long video (--long-minutes, at --long-fps) scored through the API by 1 and by 2 worker
             processes (each pinned to a core, as bench.scaling does), and each worker's peak RSS
             for that video and for a 1-minute one

at video_fps 5 and 30, faces on and off (each rate on --frames sampled frames).
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
from bench.photos import make_photos
from bench.throughput import bench_model, reference_transform
from bench.video_workers import workers_figures
from bench.webcam import RATE, SIZE, make_video
from facesense.inputs.video.frames import sample
from facesense.inputs.video.limits import VideoLimits
from facesense.inputs.video.probe import probe
from facesense.settings import Settings
from runtime.faces import Face, FaceDetector, FaceOptions, crop_face, face_copy
from runtime.network import build_alexnet, load_model
from runtime.preprocess import fit
from runtime.serving import LoadedModel, forward
from worker.model_cache import FaceCache, ModelCache
from worker.video import video_rows


def engine(path: Path, loaded: LoadedModel, fps: float, frames: int, faces=None) -> float:
    """Sampled frames/s of the engine's video path on the first `frames` samples; faces() gives
    a fresh face follower (a shard's own)."""
    info = probe(path, VideoLimits())
    plan = {"video": path.name, "info": info.__dict__, "fps": fps, "k0": 0, "k1": frames, "t0": 0}
    start = time.perf_counter()
    rows = list(video_rows(plan, loaded, _Folder(path.parent), batch_size=64,
                           faces=faces() if faces else None))
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


def naive(path: Path, model: torch.nn.Module, fps: float, frames: int, prepare, cut=None) -> float:
    """Sampled frames/s of the every-Nth-frame loop, one model (and detector) call per frame:
    prepare(image) gives the model's input tensor, cut(image) a frame's face crops."""
    every, kept = round(RATE / fps), 0
    start = time.perf_counter()
    with av.open(str(path)) as container, torch.no_grad():
        for i, frame in enumerate(container.decode(video=0)):
            if i % every:
                continue
            image = frame.to_image()
            for crop in cut(image) if cut else [image]:
                model(prepare(crop)[None])
            kept += 1
            if kept == frames:
                break
    return round(kept / (time.perf_counter() - start), 1)


def library_cut(options: FaceOptions):
    """What a Python user would write for faces: facenet-pytorch's MTCNN, one frame a call."""
    from facenet_pytorch import MTCNN
    found = MTCNN(keep_all=True, min_face_size=options.min_size, device="cpu",
                  thresholds=options.stage_thresholds())

    def cut(image: Image.Image) -> list[Image.Image]:
        boxes, _ = found.detect(image)
        return [crop_face(image, Face(tuple(int(v) for v in box), 1.0), options.margin)
                for box in ([] if boxes is None else boxes)]
    return cut


def own_cut(detector: FaceDetector, options: FaceOptions):
    """The engine's detector in the naive loop: a full detection a frame."""
    return lambda image: [crop_face(image, face, options.margin)
                          for face in detector.detect([image], options)[0]]


def stages(path: Path, loaded: LoadedModel, fps: float, frames: int, faces=None) -> dict:
    """Seconds per sampled frame of each stage, timed apart, and each one's share of their sum."""
    info, spent = probe(path, VideoLimits()), {}
    start = time.perf_counter()
    images = [s.image for s in sample(path, info, fps, 0, frames)]
    spent["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    if faces:
        cut, copies = faces(), [face_copy(img)[0] for img in images]
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


def per_frame_figures(path: Path, frames: int, base: Path) -> dict:
    """Engine vs naive loop, stage shares and decoders, at 5 and 30 fps, faces off and on."""
    agreement = make_photos(base / "agreement-640x480", 128, (640, 480), unique=128, seed=2)
    registry, manifest = bench_model(base, None, agreement)
    device, spec = torch.device("cpu"), manifest["preprocess"]
    served = {p: ModelCache(registry, device, "fp32", setting=p, batch_size=64).get(
        manifest["version"]) for p in ("auto", "fp32")}
    loaded = served["auto"]
    plain = build_alexnet(len(manifest["classes"])).eval()  # as a Python user loads it
    plain.load_state_dict(load_model(manifest, registry.weights(manifest), device).state_dict())
    faces = FaceCache(device, FaceOptions(), Settings.video_face_detect_seconds)
    options = FaceOptions()
    transform = reference_transform(spec)
    engine_fit = lambda image: torch.from_numpy(  # noqa: E731
        (fit(image, spec) / 255.0 - np.float32(spec["mean"])) / np.float32(spec["std"])
    ).permute(2, 0, 1).float()
    cuts = {"naive": library_cut(options), "naive_own": own_cut(FaceDetector("cpu"), options)}
    out = {"model": manifest["version"], "precision": loaded.precision,
           "precision_reason": loaded.reason}
    for fps in (5, 30):
        for with_faces in (False, True):
            name = f"fps{fps}_{'faces' if with_faces else 'frames'}"
            follow = partial(faces.follower, loaded, fps) if with_faces else None
            got = {"frames": frames,
                   "engine": engine(path, loaded, fps, frames, follow),
                   "engine_fp32": engine(path, served["fp32"], fps, frames, follow and partial(
                       faces.follower, served["fp32"], fps)),
                   "naive": naive(path, plain, fps, frames, transform,
                                  cuts["naive"] if with_faces else None),
                   "naive_fit": naive(path, plain, fps, frames, engine_fit,
                                      cuts["naive"] if with_faces else None)}
            if with_faces:
                got["naive_own"] = naive(path, plain, fps, frames, transform, cuts["naive_own"])
            got["stages"] = stages(path, loaded, fps, frames, follow)
            got["ratio"] = round(got["engine"] / got["naive"], 2)
            got["ratios_other"] = {f"{a}/{b}": round(got[a] / got[b], 2) for a, b in (
                ("engine_fp32", "naive"), ("engine", "naive_fit"), ("engine", "naive_own"))
                if b in got}
            out[name] = got
            print(name, json.dumps(got), flush=True)
        out[f"decoders_fps{fps}"] = decoders(path, fps, frames)
        print(f"decoders fps {fps}", json.dumps(out[f"decoders_fps{fps}"]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="the per-frame video's length")
    parser.add_argument("--frames", type=int, default=120, help="sampled frames per rate and "
                        "faces on or off (0: only the workers' runs)")
    parser.add_argument("--long-minutes", type=float, default=10)
    parser.add_argument("--long-fps", type=float, default=5, help="video_fps of the workers' runs")
    parser.add_argument("--dir", help="working folder: the model trained there is kept for the "
                        "next run (default: a temporary folder)")
    parser.add_argument("--out", default=str(OUT / "video.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        figures = {"machine": machine(), "video": f"{SIZE[0]}x{SIZE[1]} {RATE} fps H.264, one face"}
        if args.frames:
            work = Path(args.dir) if args.dir else base
            work.mkdir(parents=True, exist_ok=True)
            figures.update(per_frame_figures(make_video(base / "webcam.mp4", args.seconds),
                                             args.frames, work))
        if args.long_minutes:
            figures["workers"] = workers_figures(base, args.long_minutes, args.long_fps)
    print(json.dumps(figures, indent=2))
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
