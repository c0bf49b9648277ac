"""The train loop: where it starts, fit with checkpoints and early stopping, then register."""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from facesense.errors import ModelError
from facesense.registry import Registry
from facesense.storage.layout import HISTORY
from facesense.trainparams import TrainParams
from runtime import precision
from runtime.architectures import DEFAULT_ARCH, architecture
from runtime.network import build, load_model, new_head, to_bytes
from runtime.precision import CALIBRATION_IMAGES
from trainer.chance import chance_test
from trainer.checkpoints import Checkpoints
from trainer.data import Dataset
from trainer.engine import evaluate, train_one_epoch

log = logging.getLogger(__name__)
MAX_EPOCHS = 1000  # min_steps raises a small set's epochs no further than this
AGREEMENT_IMAGES = 400  # validation images the precision agreement is measured on, at most


@dataclass
class FitResult:
    """What training produced: the best epoch's weights and metrics, and every epoch's row."""

    state: dict
    metrics: dict
    best_epoch: int
    history: list[dict]


@dataclass
class Start:
    """Where a run starts: the network, its weights (None: fresh), the parent version."""

    arch: str
    state: dict | None = None
    parent: str | None = None

    @property
    def fine_tuning(self) -> bool:
        """Whether the backbone comes from trained weights (it then learns more slowly)."""
        return self.state is not None


def initial_state(params: TrainParams, classes: list[str], base: dict | None,
                  registry: Registry | None,
                  pretrained: Callable[[], bytes] | None = None) -> Start:
    """The starting point: the base version's weights (head replaced when classes differ),
    ImageNet AlexNet's (pretrained() gives the verified .pth bytes), or a fresh AlexNet."""
    if base is not None:
        if registry is None:
            raise ModelError("a base version needs a model registry")
        arch = base.get("arch") or DEFAULT_ARCH
        state = load_model(base, registry.weights(base), torch.device("cpu")).state_dict()
        if base["classes"] != classes:  # new head for the new classes
            state = new_head(state, arch, len(classes))
        return Start(arch, state, base["version"])
    if params.pretrained:
        if pretrained is None:
            raise ModelError("pretrained ImageNet weights need the store and settings to fetch "
                             "them from")
        state = torch.load(io.BytesIO(pretrained()), map_location="cpu", weights_only=True)
        return Start(DEFAULT_ARCH, new_head(state, DEFAULT_ARCH, len(classes)))
    return Start(DEFAULT_ARCH)


def planned_epochs(params: TrainParams, train_images: int) -> tuple[int, str | None]:
    """The epochs to run, and why when min_steps raised them (a small set's few steps an epoch
    would otherwise end training in its first plateau)."""
    per_epoch = math.ceil(train_images / params.batch_size)
    if params.epochs * per_epoch >= params.min_steps:
        return params.epochs, None
    epochs = min(MAX_EPOCHS, math.ceil(params.min_steps / per_epoch))
    return epochs, (f"epochs raised from {params.epochs} to {epochs}: {train_images} training "
                    f"images make {per_epoch} step(s) an epoch, and at least {params.min_steps} "
                    "steps are run (params.min_steps)")


def make_optimizer(model: torch.nn.Module, params: TrainParams, steps: int, *, epochs: int,
                   head: str | None = None):
    """The optimiser and a schedule: linear warm-up, then cosine decay.

    head: when fine-tuning, the head's module name; the backbone then learns at
    params.backbone_lr times the head's rate (0: frozen).
    """
    groups: list[dict] = [{"params": list(model.parameters())}]
    if head is not None:
        own = [p for n, p in model.named_parameters() if n.startswith(head + ".")]
        rest = [p for n, p in model.named_parameters() if not n.startswith(head + ".")]
        groups = [{"params": own}, {"params": rest, "lr": params.lr * params.backbone_lr}]
        if params.backbone_lr == 0:
            for p in rest:
                p.requires_grad_(False)
            groups = groups[:1]
    if params.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=params.lr, momentum=0.9, nesterov=True,
                              weight_decay=params.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
    warmup = warmup_steps(steps, epochs)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def warmup_steps(steps: int, epochs: int) -> int:
    """Warm-up: a tenth of the run, and at least one epoch."""
    return max(steps // max(epochs, 1), steps // 10, 1)


def warmup_epochs(epochs: int) -> int:
    """The epochs warm-up spans; early stopping waits for them to pass."""
    return max(1, math.ceil(epochs / 10))


def network(start: Start, n_classes: int, device: torch.device) -> torch.nn.Module:
    """The start's network with its weights (if any), on device in its memory format."""
    model = build(start.arch, n_classes)
    if start.state is not None:
        model.load_state_dict(start.state)
    return model.to(device, memory_format=architecture(start.arch).memory_format)


def fit(data: Dataset, params: TrainParams, spec: dict, *, device: torch.device, precision: str,
        start: Start | None = None, epochs: int | None = None,
        checkpoints: Checkpoints | None = None,
        on_epoch: Callable[[dict], None] = lambda row: None,
        should_stop: Callable[[], bool] = lambda: False) -> FitResult:
    """Train the start's network on data for epochs (default params.epochs); resumes from the
    last checkpoint when there is one."""
    torch.manual_seed(params.seed)
    start = start or Start(DEFAULT_ARCH)
    epochs = epochs or params.epochs
    model = network(start, len(data.classes), device)
    steps = epochs * math.ceil(len(data.train_y) / params.batch_size)
    optimizer, scheduler = make_optimizer(
        model, params, steps, epochs=epochs,
        head=architecture(start.arch).head if start.fine_tuning else None)
    warm = warmup_epochs(epochs)
    # Patience is progress, not passes: a small set's epochs were multiplied, so is its patience.
    patience = math.ceil(params.patience * epochs / params.epochs)
    history, best, first, best_saved = [], None, 1, True
    saved = checkpoints.load() if checkpoints else None
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history, best, first = saved["history"], saved["best"], saved["epoch"] + 1
        best["state"] = checkpoints.load_best()
        log.info("resuming from the checkpoint of epoch %d", saved["epoch"])
    for epoch in range(first, epochs + 1):
        # Early stopping waits for warm-up: a small set's first epochs are a plateau.
        if best and patience and epoch > warm and epoch - max(best["epoch"], warm) > patience:
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
                 start: Start, job_id: str | None, source: str,
                 faces: dict | None = None, plan: dict | None = None) -> dict:
    """A self-describing manifest for the trained version (faces: how its faces were cut)."""
    correct = sum(row[i] for i, row in enumerate(result.metrics["confusion_matrix"]))
    return {"classes": data.classes, "arch": start.arch, "preprocess": spec,
            "metrics": {**result.metrics, "best_epoch": result.best_epoch,
                        "epochs_run": len(result.history)},
            "chance": chance_test(correct, [data.counts[c]["val"] for c in data.classes]),
            **({"training_plan": plan} if plan else {}),
            "params": params.to_dict(), "dataset": {"source": source,
                                                   "fingerprint": data.fingerprint,
                                                   "counts": data.counts,
                                                   "skipped": len(data.skipped),
                                                   **({"no_face": data.no_face} if faces else {})},
            **({"faces": faces} if faces else {}), "parent": start.parent, "job_id": job_id}


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
    model = build(manifest["arch"], len(manifest["classes"]))
    model.load_state_dict(state)
    spec = manifest["preprocess"]
    side, crop = data.train_x.shape[1], spec["input_size"]
    top = (side - crop) // 2
    calibration = data.train_x[:CALIBRATION_IMAGES].numpy()[:, top:top + crop, top:top + crop]
    images = data.val_x[:AGREEMENT_IMAGES].numpy()
    return precision.record(model, spec, images, calibration, "validation images")
