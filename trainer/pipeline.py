"""The one training pipeline: a labelled folder becomes a registered (maybe promoted) version.

The worker's training task and `python -m trainer` both run it, so both use the same dataset
cache, the same image limits and the same decode threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from facesense.pretrained import pretrained_state_bytes
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.storage import Store
from facesense.trainparams import TrainParams
from runtime.faces import FaceDetector, FaceOptions, LargestFace
from runtime.preprocess import spec_for
from trainer.chance import images_needed
from trainer.data import Dataset, DatasetError, load_data
from trainer.engine import Stopped
from trainer.promotion import promote
from trainer.train import (
    Checkpoints,
    FitResult,
    fit,
    initial_state,
    manifest_for,
    planned_epochs,
    register,
)


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
                  on_plan: Callable[[dict], None] = lambda plan: None,
                  should_stop: Callable[[], bool] = lambda: False,
                  job_id: str | None = None, promote_policy: str = "never",
                  alias: str = "production", promoted_by: str = "") -> Trained:
    """Load, fit (resuming from checkpoints), register, and apply the promotion policy.

    Raises trainer.engine.Stopped when should_stop() turns true, before anything is published.
    """
    base = registry.resolve(params.base) if params.base else None
    # A base decides the inputs (its arch, size, normalisation) and, unless told, the faces.
    spec = base["preprocess"] if base else spec_for(params.image_size, params.resize_size)
    on_faces = params.faces if params.faces is not None else bool(base and base.get("faces"))
    options = FaceOptions.from_settings(settings)
    face = (LargestFace(FaceDetector(device), options.for_version(base) if base else options)
            if on_faces else None)
    data = load_data(source, val_split=params.val_split, seed=params.seed, spec=spec,
                     cache_dir=dataset_cache(settings), max_pixels=settings.max_image_pixels,
                     max_bytes=settings.max_image_bytes, threads=threads, face=face)
    check_can_beat_chance(data)
    on_data(data)
    epochs, why = planned_epochs(params, len(data.train_y))
    plan = {"epochs": epochs, **({"note": why} if why else {})}
    on_plan(plan)
    start = initial_state(params, data.classes, base, registry,
                          pretrained=lambda: pretrained_state_bytes(registry.store, settings))
    result = fit(data, params, spec, device=device, precision=precision, start=start,
                 epochs=epochs, checkpoints=checkpoints, on_epoch=on_epoch,
                 should_stop=should_stop)
    if should_stop():  # asked to stop during the last evaluation: publish nothing
        raise Stopped
    manifest = register(registry, result, manifest_for(
        result, data, params, spec, start=start, job_id=job_id, source=source_url,
        faces=face and face.entry, plan=plan), data)
    promotion = promote(registry, manifest, data, promote_policy, by=promoted_by, source=source,
                        device=device, precision=precision, alias=alias)
    return Trained(manifest, data, result, promotion)


def check_can_beat_chance(data: Dataset) -> None:
    """Refuse, before training, a validation set on which even a perfect score could not beat
    always guessing its commonest class: no version trained on it could ever be promoted."""
    val = [data.counts[c]["val"] for c in data.classes]
    needed = images_needed(max(val) / sum(val))
    if needed is not None and sum(val) >= needed:
        return
    wanted = (f"at least {needed} validation images" if needed
              else "validation images of every class")
    raise DatasetError(
        f"the validation set has {sum(val)} images ({', '.join(map(str, val))} per class): even "
        f"a perfect score on them cannot beat guessing the commonest class at p < 0.05; it needs "
        f"{wanted}, the classes balanced (add images, or raise params.val_split)")
