"""What a scoring worker adds to its context: the device, its precision, a model cache, faces."""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import partial

import numpy as np
import torch

from facesense.errors import ConfigError
from facesense.registry import Registry
from facesense.settings import Settings
from runtime.device import default_batch_size, default_threads, resolve_device, resolve_precision
from runtime.facefollow import FaceFollower
from runtime.faces import CutFaces, FaceDetector, FaceOptions, cut_faces
from runtime.gpu_decode import DECODERS, resolve_decoder
from runtime.network import load_model
from runtime.precision import CALIBRATION, read_calibration
from runtime.serving import LoadedModel, serve
from worker import metrics
from worker.context import Context


class ModelCache:
    """Loaded model versions by name; a version is immutable, so a cached copy never goes stale."""

    def __init__(self, registry: Registry, device: torch.device, precision: str, size: int = 2,
                 *, setting: str = "auto", batch_size: int = 0):
        self.registry, self.device, self.precision, self.size = registry, device, precision, size
        # precision: this worker's training precision; each version's serving precision is
        # chosen from the setting, its manifest and a measurement when it loads (runtime.serving).
        self.setting, self.batch_size = setting, batch_size or default_batch_size(device)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str) -> LoadedModel:
        """The loaded version, loading (and checksum-verifying) it on first use."""
        with self._lock:
            if version in self._models:
                self._models.move_to_end(version)
                return self._models[version]
            manifest = self.registry.manifest(version)
            with metrics.MODEL_LOAD.time():
                model = load_model(manifest, self.registry.weights(manifest), self.device)
                loaded = serve(manifest, model, self.device, self.setting,
                               batch_size=self.batch_size, calibration=partial(self._calibration,
                                                                               version))
            self._models[version] = loaded
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return loaded

    def _calibration(self, version: str) -> np.ndarray | None:
        data = self.registry.file(version, CALIBRATION)
        return None if data is None else read_calibration(data)


class FaceCache:
    """The face detector, loaded by the first job that asks for faces, shared by the rest."""

    def __init__(self, device: torch.device, options: FaceOptions,
                 detect_seconds: float = Settings.video_face_detect_seconds):
        self.device, self.options, self.detect_seconds = device, options, detect_seconds
        self._detector: FaceDetector | None = None
        self._lock = threading.Lock()

    def cutter(self, loaded: LoadedModel) -> CutFaces:
        """cut_faces for a version: its training margin where it was trained on faces."""
        return partial(cut_faces, detector=self._loaded(), options=self._options(loaded))

    def follower(self, loaded: LoadedModel, fps: float) -> FaceFollower:
        """A video shard's cutter: full detection every FACESENSE_VIDEO_FACE_DETECT_SECONDS of
        its frames, each face followed in between (runtime.facefollow)."""
        # Rounded down, so a face coming into the picture is found at most that late (0 or 1:
        # full detection on every frame).
        every = int(self.detect_seconds * fps + 1e-9)
        return FaceFollower(self._loaded(), self._options(loaded), every)

    def _loaded(self) -> FaceDetector:
        """The detector, loaded on first use."""
        with self._lock:
            if self._detector is None:
                self._detector = FaceDetector(self.device)
            return self._detector

    def _options(self, loaded: LoadedModel) -> FaceOptions:
        """The settings' face options, with how the version was trained on faces, if it was."""
        return self.options.for_version({"faces": loaded.faces, "version": loaded.version})


def check_device(settings: Settings) -> None:
    """Fail fast on a device, precision or decoder a scoring worker can't run with."""
    device = resolve_device(settings.device)
    resolve_precision(settings.precision, device)
    if settings.precision == "int8" and device.type != "cpu":
        raise ConfigError("FACESENSE_PRECISION=int8 runs on the CPU only")
    if settings.decoder not in DECODERS:
        raise ConfigError(f"FACESENSE_DECODER={settings.decoder!r}: use auto, cpu or gpu")


def add_models(ctx: Context) -> Context:
    """Give a context the device, precision, batch size, decoder and a model cache."""
    settings = ctx.settings
    device = resolve_device(settings.device)
    ctx.faces = FaceCache(device, FaceOptions.from_settings(settings),
                          settings.video_face_detect_seconds)
    ctx.batch_size = settings.batch_size or default_batch_size(device)
    ctx.models = ModelCache(ctx.registry, device, resolve_precision(settings.precision, device),
                            setting=settings.precision, batch_size=ctx.batch_size)
    ctx.threads = settings.decode_threads or default_threads()
    ctx.decoder = resolve_decoder(settings.decoder, device)
    return ctx
