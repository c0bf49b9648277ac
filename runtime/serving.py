"""A model version ready to run, and its forward pass from uint8 pixels to probabilities."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from facesense.errors import ModelError
from runtime.precision import agrees, choose, digest, run, time_variants, variant
from runtime.preprocess import normalize

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model version ready to run: the network plus what its manifest says about inputs."""

    version: str
    classes: list[str]
    spec: dict  # preprocessing: input_size, resize_size, mean, std
    model: torch.nn.Module  # the variant of the precision below (bf16 weights, int8, or fp32)
    device: torch.device
    precision: str  # fp32, bf16, bf16-full, fp16 or int8
    reason: str = ""  # why this precision, e.g. "bf16-full: agrees, 2.1x faster"
    faces: dict | None = None  # the manifest's faces: how its training images were cut, if so


def forward(loaded: LoadedModel, batch: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 NHWC batch (CPU array, or tensor already on the device) -> class probabilities."""
    x = normalize(torch.as_tensor(batch), loaded.spec, loaded.device)
    return torch.softmax(run(loaded.model, loaded.precision, x), dim=1).cpu().numpy()


def serve(manifest: dict, model: torch.nn.Module, device: torch.device, setting: str, *,
          batch_size: int, calibration: Callable[[], np.ndarray | None] = lambda: None,
          cpu_bf16: bool | None = None,
          timings: Callable[[tuple[str, ...]], dict[str, float]] | None = None) -> LoadedModel:
    """A loaded fp32 model at the precision chosen for this version on this machine.

    calibration() gives the version's int8 calibration images; int8 is only a candidate when
    they are the ones its agreement was measured with. timings defaults to measuring each
    candidate here, at batch_size and the version's input size.
    """
    spec, modules = manifest["preprocess"], {"fp32": model}
    images = calibration() if setting == "int8" or agrees(manifest, "int8") else None
    if setting == "int8" and images is None:
        raise ModelError(f"model {manifest['version']}: FACESENSE_PRECISION=int8 needs the "
                         "version's int8 calibration images, which it was registered without")
    expected = (manifest.get("precision") or {}).get("calibration_sha256")
    if agrees(manifest, "int8") and (images is None or digest(images) != expected):
        log.warning("model %s: int8 calibration images missing or changed: int8 not offered",
                    manifest["version"])
        record = manifest["precision"]
        manifest = {**manifest, "precision": {**record, "variants": {
            **record["variants"], "int8": {**record["variants"]["int8"], "agrees": False}}}}

    def module(name: str) -> torch.nn.Module:
        if name not in modules:
            modules[name] = variant(model, name, images, spec)
        return modules[name]

    def measured(names: tuple[str, ...]) -> dict[str, float]:
        return time_variants({n: module(n) for n in names}, spec, batch_size, device)

    precision, reason = choose(setting, device, manifest, timings or measured, cpu_bf16)
    log.info("model %s: %s", manifest["version"], reason)
    return LoadedModel(manifest["version"], manifest["classes"], spec, module(precision), device,
                       precision, reason, manifest.get("faces"))
