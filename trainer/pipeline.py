"""The one training pipeline: a labelled folder becomes a registered (maybe promoted) version.

The worker's training task and `python -m trainer` both run it, so both use the same dataset
cache, the same image limits and the same decode threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from facesense.registry import Registry
from facesense.settings import Settings
from facesense.storage import Store
from facesense.trainparams import TrainParams
from runtime.faces import FaceDetector, FaceOptions, LargestFace
from runtime.preprocess import spec_for
from trainer.data import Dataset, load_data
from trainer.engine import Stopped
from trainer.promotion import promote
from trainer.train import Checkpoints, FitResult, fit, initial_state, manifest_for, register


@dataclass
class Trained:
    """What a pipeline run produced: the version's manifest, its data, its fit, the promotion."""

    manifest: dict
    data: Dataset
    result: FitResult
    promotion: dict


def dataset_cache(settings: Settings) -> Path:
    """Where fetched training images are kept between runs (and between redeliveries)."""
    return Path(settings.data_dir) / "cache" / "datasets"


def train_version(source: Store, source_url: str, params: TrainParams, *, settings: Settings,
                  registry: Registry, device: torch.device, precision: str, threads: int,
                  checkpoints: Checkpoints | None = None,
                  on_data: Callable[[Dataset], None] = lambda data: None,
                  on_epoch: Callable[[dict], None] = lambda row: None,
                  should_stop: Callable[[], bool] = lambda: False,
                  job_id: str | None = None, promote_policy: str = "never",
                  alias: str = "production", promoted_by: str = "") -> Trained:
    """Load, fit (resuming from checkpoints), register, and apply the promotion policy.

    Raises trainer.engine.Stopped when should_stop() turns true, before anything is published.
    """
    spec = spec_for(params.image_size, params.resize_size)
    face = (LargestFace(FaceDetector(device), FaceOptions.from_settings(settings))
            if params.faces else None)
    data = load_data(source, val_split=params.val_split, seed=params.seed, spec=spec,
                     cache_dir=dataset_cache(settings), max_pixels=settings.max_image_pixels,
                     max_bytes=settings.max_image_bytes, threads=threads, face=face)
    on_data(data)
    init, parent = initial_state(params, data.classes, registry)
    result = fit(data, params, spec, device=device, precision=precision, init_state=init,
                 checkpoints=checkpoints, on_epoch=on_epoch, should_stop=should_stop)
    if should_stop():  # asked to stop during the last evaluation: publish nothing
        raise Stopped
    manifest = register(registry, result, manifest_for(
        result, data, params, spec, parent=parent, job_id=job_id, source=source_url,
        faces=face and face.entry), data)
    promotion = promote(registry, manifest, data, promote_policy, by=promoted_by, source=source,
                        device=device, precision=precision, alias=alias)
    return Trained(manifest, data, result, promotion)
