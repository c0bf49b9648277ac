"""One epoch of training, and evaluation with per-class metrics, shaped like torchvision's."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from facesense.errors import TrainingDiverged
from runtime.device import autocast
from runtime.preprocess import normalize


class Stopped(Exception):
    """Training was asked to stop (the job was cancelled) between two batches."""


def augment(batch: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random size x size crops and horizontal flips of a uint8 NHWC batch."""
    n, h, w, _ = batch.shape
    tops = torch.randint(0, h - size + 1, (n,), generator=gen)
    lefts = torch.randint(0, w - size + 1, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    out = torch.empty((n, size, size, 3), dtype=torch.uint8)
    for i in range(n):
        crop = batch[i, tops[i]:tops[i] + size, lefts[i]:lefts[i] + size]
        out[i] = crop.flip(1) if flips[i] else crop
    return out


def centre(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Centre size x size crops of a uint8 NHWC batch."""
    h, w = batch.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return batch[:, top:top + size, left:left + size]


def jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-image brightness and contrast jitter on a normalised float batch."""
    n = x.shape[0]
    gain = (1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4).to(x.device)
    bias = ((torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4).to(x.device)
    return x * gain + bias


def train_one_epoch(model, optimizer, scheduler, x: torch.Tensor, y: torch.Tensor, *, spec: dict,
                    batch_size: int, augment_images: bool, gen: torch.Generator,
                    device: torch.device, precision: str,
                    should_stop: Callable[[], bool] = lambda: False,
                    epoch: int | None = None) -> dict:
    """One pass over (x, y) in a seeded random order; returns loss, accuracy and images/s.

    A loss that is not finite ends the run (TrainingDiverged, naming the epoch): the weights
    are then NaN, and every later step, evaluation or int8 calibration would only fail less
    clearly."""
    model.train()
    size = spec["input_size"]
    order = torch.randperm(len(y), generator=gen)
    if epoch is None:  # the schedule steps once a batch from the first epoch on, resumed or not
        epoch = scheduler.last_epoch // max(1, math.ceil(len(y) / batch_size)) + 1
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    for i in range(0, len(order), batch_size):
        if should_stop():
            raise Stopped
        idx = order[i:i + batch_size]
        batch = augment(x[idx], size, gen) if augment_images else centre(x[idx], size)
        inputs = normalize(batch, spec, device)
        if augment_images:
            inputs = jitter(inputs, gen)
        targets = y[idx].to(device)
        with autocast(device, precision):
            logits = model(inputs)
            loss = F.cross_entropy(logits.float(), targets)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(diverged(value, epoch, optimizer))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += value * len(idx)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(idx)
    # the epoch's last step may have made the weights NaN with a finite loss: once an epoch (a
    # few ms for AlexNet), so a NaN model is never evaluated, calibrated or registered
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingDiverged(diverged(float("nan"), epoch, optimizer, "the weights"))
    elapsed = time.perf_counter() - start
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "images_per_s": round(seen / elapsed, 1) if elapsed else None}


def diverged(value: float, epoch: int, optimizer, what: str = "the loss") -> str:
    """Why a run stopped, in words a user can act on."""
    lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
    return (f"{what} became {'NaN' if math.isnan(value) else 'infinite'} at epoch {epoch}; "
            f"lower lr (it was {lr:g}) and train again")


@torch.inference_mode()
def predict(model, x: torch.Tensor, *, spec: dict, device: torch.device, precision: str,
            batch_size: int = 128) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 NHWC images already at the input size."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        with autocast(device, precision):
            out.append(model(normalize(x[i:i + batch_size], spec, device)).float().cpu())
    return torch.cat(out) if out else torch.empty((0, 0))


def evaluate(model, x: torch.Tensor, y: torch.Tensor, classes: list[str], *, spec: dict,
             device: torch.device, precision: str) -> dict:
    """Loss, accuracy, per-class precision / recall / F1 and the confusion matrix."""
    logits = predict(model, x, spec=spec, device=device, precision=precision)
    return metrics_from(logits, y, classes)


def metrics_from(logits: torch.Tensor, y: torch.Tensor, classes: list[str]) -> dict:
    """Classification metrics from logits and true labels."""
    pred = logits.argmax(1)
    k = len(classes)
    confusion = torch.zeros((k, k), dtype=torch.long)  # rows: truth, columns: prediction
    confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    per_class = {}
    for i, c in enumerate(classes):
        tp = confusion[i, i].item()
        fp = confusion[:, i].sum().item() - tp
        fn = confusion[i, :].sum().item() - tp
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per_class[c] = {"precision": round(p, 4), "recall": round(r, 4),
                        "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
                        "support": tp + fn}
    return {"loss": round(F.cross_entropy(logits, y).item(), 5),
            "accuracy": round((pred == y).float().mean().item(), 5),
            "per_class": per_class, "confusion_matrix": confusion.tolist()}
