"""The train loop: fit with per-epoch checkpoints and early stopping, then register a version."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from facesense.errors import ModelError, ObjectNotFound
from facesense.registry import Registry
from facesense.storage import Store
from facesense.storage.layout import HISTORY
from facesense.trainparams import TrainParams
from runtime import precision
from runtime.network import HEAD, build_alexnet, load_model, to_bytes
from runtime.precision import CALIBRATION_IMAGES
from trainer.data import Dataset
from trainer.engine import evaluate, train_one_epoch

log = logging.getLogger(__name__)
PRETRAINED_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet weights
AGREEMENT_IMAGES = 400  # validation images the precision agreement is measured on, at most


class Checkpoints:
    """The last checkpointed epoch's state (model, optimiser, schedule, history) under one key
    in the store, and the best epoch's weights under another (written with it, if improved)."""

    def __init__(self, store: Store, key: str, interval_s: float = 0):
        self.store, self.key, self.interval_s = store, key, interval_s
        self.best_key = key.rsplit(".", 1)[0] + "-best.safetensors"
        self.saved_at = time.monotonic()  # the run's start, until a checkpoint is written

    def due(self) -> bool:
        """Whether interval_s have passed since the last checkpoint (or the run's start)."""
        # Each is ~900 MB with AdamW's state: short epochs must not spend most of their time
        # writing them; a killed run loses at most interval_s plus an epoch.
        return time.monotonic() - self.saved_at >= self.interval_s

    def save_best(self, state: dict) -> None:
        """Write the best weights so far."""
        self.store.put(self.best_key, to_bytes(state))

    def load_best(self) -> dict:
        """The best weights so far."""
        from safetensors.torch import load

        return load(self.store.get(self.best_key))

    def load(self) -> dict | None:
        """The saved state, or None; loaded weights-only, so a checkpoint can't run code."""
        with tempfile.TemporaryFile() as f:
            try:
                with self.store.open(self.key) as stream:
                    shutil.copyfileobj(stream, f, 1 << 20)
            except ObjectNotFound:
                return None
            f.seek(0)
            try:
                return torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ModelError(f"checkpoint {self.key} is not a plain tensor checkpoint "
                                 f"({e})") from None

    def delete(self) -> None:
        """Remove both files (after the version is registered)."""
        self.store.delete(self.key)
        self.store.delete(self.best_key)

    def save(self, state: dict) -> None:
        """Write the state through a temporary file, streamed to the store (multipart on S3;
        atomic either way): no in-memory copy of a checkpoint that can pass 1 GB."""
        with tempfile.TemporaryFile() as f:
            torch.save(state, f)
            f.seek(0)
            self.store.put_stream(self.key, f)
        self.saved_at = time.monotonic()


@dataclass
class FitResult:
    """What training produced: the best epoch's weights and metrics, and every epoch's row."""

    state: dict
    metrics: dict
    best_epoch: int
    history: list[dict]


def initial_state(params: TrainParams, classes: list[str], registry: Registry | None) -> tuple[
        dict | None, str | None]:
    """Starting weights (None: fresh init) and the parent version, from base or pretrained."""
    if params.base:
        if registry is None:
            raise ModelError("a base version needs a model registry")
        manifest = registry.resolve(params.base)
        model = load_model(manifest, registry.weights(manifest), torch.device("cpu"))
        state = model.state_dict()
        if manifest["classes"] != classes:  # new head for the new classes
            fresh = build_alexnet(len(classes)).state_dict()
            state.update({k: v for k, v in fresh.items() if k.startswith(HEAD)})
        return state, manifest["version"]
    if params.pretrained:
        path = Path(torch.hub.get_dir()) / "checkpoints" / PRETRAINED_FILE
        if not path.is_file():
            raise ModelError(f"pretrained ImageNet AlexNet weights are not in the torch cache "
                             f"({path}); copy {PRETRAINED_FILE} there, or train with "
                             "pretrained=false")
        state = torch.load(path, map_location="cpu", weights_only=True)
        fresh = build_alexnet(len(classes)).state_dict()
        state.update({k: v for k, v in fresh.items() if k.startswith(HEAD)})
        return state, None
    return None, None


def make_optimizer(model: torch.nn.Module, params: TrainParams, steps: int):
    """The optimiser and a schedule: one epoch of linear warm-up, then cosine decay."""
    if params.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=0.9, nesterov=True,
                              weight_decay=params.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    per_epoch = max(1, steps // params.epochs)

    def factor(step: int) -> float:
        if step < per_epoch:
            return (step + 1) / per_epoch
        return 0.5 * (1 + math.cos(math.pi * (step - per_epoch) / max(1, steps - per_epoch)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fit(data: Dataset, params: TrainParams, spec: dict, *, device: torch.device, precision: str,
        init_state: dict | None = None, checkpoints: Checkpoints | None = None,
        on_epoch: Callable[[dict], None] = lambda row: None,
        should_stop: Callable[[], bool] = lambda: False) -> FitResult:
    """Train AlexNet on data; resumes from the last checkpoint when there is one."""
    torch.manual_seed(params.seed)
    model = build_alexnet(len(data.classes))
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device, memory_format=torch.channels_last)
    steps = params.epochs * math.ceil(len(data.train_y) / params.batch_size)
    optimizer, scheduler = make_optimizer(model, params, steps)
    history, best, start, best_saved = [], None, 1, True
    saved = checkpoints.load() if checkpoints else None
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history, best, start = saved["history"], saved["best"], saved["epoch"] + 1
        best["state"] = checkpoints.load_best()
        log.info("resuming from the checkpoint of epoch %d", saved["epoch"])
    for epoch in range(start, params.epochs + 1):
        if best and params.patience and epoch - best["epoch"] > params.patience:
            break
        torch.manual_seed(params.seed * 7919 + epoch)  # dropout: the same on a resumed run
        gen = torch.Generator().manual_seed(params.seed * 1_000_003 + epoch)
        started = time.perf_counter()
        row = {"epoch": epoch, **train_one_epoch(
            model, optimizer, scheduler, data.train_x, data.train_y, spec=spec,
            batch_size=params.batch_size, augment_images=params.augment, gen=gen, device=device,
            precision=precision, should_stop=should_stop)}
        val = evaluate(model, data.val_x, data.val_y, data.classes, spec=spec, device=device,
                       precision=precision)
        row.update(val_loss=val["loss"], val_accuracy=val["accuracy"],
                   lr=scheduler.get_last_lr()[0], seconds=round(time.perf_counter() - started, 2),
                   finished_at=round(time.time(), 3), resumed=bool(saved))
        history.append(row)
        if best is None or val["loss"] < best["metrics"]["loss"] - 1e-4:  # lower val loss wins
            best = {"epoch": epoch, "metrics": val,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            best_saved = False
        if checkpoints and checkpoints.due():
            if not best_saved:  # written with the checkpoint whose "best" names it
                checkpoints.save_best(best["state"])
                best_saved = True
            checkpoints.save({"epoch": epoch, "model": model.state_dict(),
                              "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "history": history,
                              "best": {k: v for k, v in best.items() if k != "state"}})
        on_epoch(row)
    return FitResult(best["state"], best["metrics"], best["epoch"], history)


def manifest_for(result: FitResult, data: Dataset, params: TrainParams, spec: dict, *,
                 parent: str | None, job_id: str | None, source: str,
                 faces: dict | None = None) -> dict:
    """A self-describing manifest for the trained version (faces: how its faces were cut)."""
    return {"classes": data.classes, "arch": "alexnet", "preprocess": spec,
            "metrics": {**result.metrics, "best_epoch": result.best_epoch,
                        "epochs_run": len(result.history)},
            "params": params.to_dict(), "dataset": {"source": source,
                                                   "fingerprint": data.fingerprint,
                                                   "counts": data.counts,
                                                   "skipped": len(data.skipped),
                                                   **({"no_face": data.no_face} if faces else {})},
            **({"faces": faces} if faces else {}), "parent": parent, "job_id": job_id}


def register(registry: Registry, result: FitResult, manifest: dict,
             data: Dataset | None = None) -> dict:
    """Store the best weights, manifest and history.json as a new immutable version; with data,
    also how each reduced precision agrees with fp32 on its validation images."""
    files = {HISTORY: json.dumps(result.history, indent=2).encode()}
    if data is not None and len(data.val_x):
        fields, extra = agreement(result.state, manifest, data)
        manifest, files = {**manifest, **fields}, {**files, **extra}
    return registry.register(to_bytes(result.state), manifest, files=files)


def agreement(state: dict, manifest: dict, data: Dataset) -> tuple[dict, dict[str, bytes]]:
    """Reduced precisions against fp32 on the validation images (int8 calibrated on training
    images' centre crops, so it is not judged on the images it was calibrated with)."""
    model = build_alexnet(len(manifest["classes"]))
    model.load_state_dict(state)
    spec = manifest["preprocess"]
    side, crop = data.train_x.shape[1], spec["input_size"]
    top = (side - crop) // 2
    calibration = data.train_x[:CALIBRATION_IMAGES].numpy()[:, top:top + crop, top:top + crop]
    images = data.val_x[:AGREEMENT_IMAGES].numpy()
    return precision.record(model, spec, images, calibration, "validation images")
