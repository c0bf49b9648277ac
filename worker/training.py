"""A training job as a plain function: load data, fit with checkpoints, register, promote."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from facesense.jobs import JobStatus
from facesense.sources import open_source
from facesense.trainparams import TrainParams
from trainer.data import Dataset, load_data
from trainer.engine import Stopped, metrics_from, predict
from trainer.model import load_model
from trainer.presets import preprocess, spec_for
from trainer.train import Checkpoints, fit, initial_state, manifest_for, register
from worker.context import Context
from worker.lease import Lease, LeaseLost

log = logging.getLogger(__name__)


def checkpoint_key(job_id: str) -> str:
    """Where a training job's last-epoch checkpoint lives."""
    return f"jobs/{job_id}/checkpoint.pt"


def run_training(ctx: Context, job_id: str) -> dict | None:
    """Train, register and maybe promote; resumes from the last checkpoint when redelivered.

    A lease in Redis, renewed by a heartbeat, keeps a redelivered copy of the task from
    training beside a live worker; once the lease lapses (the worker died), a copy takes over.
    """
    record = ctx.jobs.get(job_id)
    if JobStatus(record["status"]).finished:
        return None
    try:
        with Lease(ctx.jobs, job_id, ctx.settings.lease_ttl_s) as lease:
            return _train(ctx, job_id, record, lease)
    except LeaseLost:
        log.warning("job %s: lease lost; leaving the job to the worker that holds it", job_id)
        return None


def _train(ctx: Context, job_id: str, record: dict, lease: Lease) -> dict | None:
    params = TrainParams.parse(record["params"])
    ctx.jobs.set_status(job_id, JobStatus.RUNNING, device=str(ctx.models.device),
                        precision=ctx.models.precision)
    spec = spec_for(params.image_size, params.resize_size)
    data = load_data(open_source(record["dataset"], ctx.settings, ctx.store),
                     val_split=params.val_split, seed=params.seed, spec=spec,
                     cache_dir=Path(ctx.settings.data_dir) / "cache" / "datasets",
                     max_pixels=ctx.settings.max_image_pixels,
                     max_bytes=ctx.settings.max_image_bytes, threads=ctx.threads)
    ctx.jobs.update(job_id, classes=data.classes, dataset_info={
        "fingerprint": data.fingerprint, "counts": data.counts, "skipped": len(data.skipped),
        "skipped_examples": data.skipped[:20]}, total=params.epochs)
    init, parent = initial_state(params, data.classes, ctx.registry)
    checkpoints = Checkpoints(ctx.store, checkpoint_key(job_id))
    history: list[dict] = list((checkpoints.load() or {}).get("history", []))

    def on_epoch(row: dict) -> None:
        history.append(row)
        ctx.jobs.update(job_id, done=row["epoch"], epoch=row["epoch"], history=history,
                        metrics={k: v for k, v in row.items() if k != "epoch"})

    def cancelled() -> bool:
        lease.check()
        return ctx.jobs.get_field(job_id, "status") == JobStatus.CANCELLED.value

    try:
        result = fit(data, params, spec, device=ctx.models.device,
                     precision=ctx.models.precision, init_state=init, checkpoints=checkpoints,
                     on_epoch=on_epoch, should_stop=cancelled)
    except Stopped:
        log.info("job %s cancelled during training", job_id)
        ctx.jobs.archive(job_id)
        return None
    if cancelled():  # cancelled during the last evaluation: publish nothing
        return None
    manifest = register(ctx.registry, result, manifest_for(
        result, data, params, spec, parent=parent, job_id=job_id, source=record["dataset"]))
    promotion = promote(ctx, manifest, data, record.get("promote", "never"), job_id,
                        record["dataset"])
    if ctx.jobs.set_status(job_id, JobStatus.SUCCEEDED, model_version=manifest["version"],
                           metrics=manifest["metrics"], promotion=promotion,
                           history=result.history):
        ctx.jobs.archive(job_id)
        checkpoints.delete()  # ~1 GB of optimiser state, useless once the version exists
    return manifest


def promote(ctx: Context, manifest: dict, data: Dataset, policy: str, job_id: str,
            dataset_url: str, alias: str = "production") -> dict:
    """Apply the promotion policy; if_better compares with the alias holder on the same images."""
    out = {"policy": policy, "alias": alias, "promoted": False,
           "candidate_accuracy": manifest["metrics"]["accuracy"]}
    if policy == "never":
        return out
    holder = ctx.registry.alias(alias)
    if policy == "if_better" and holder:
        incumbent = ctx.registry.manifest(holder["version"])
        if incumbent["classes"] != data.classes:
            return {**out, "reason": f"{holder['version']} has other classes; not comparable"}
        accuracy = incumbent_accuracy(ctx, incumbent, data, dataset_url)
        out["incumbent"], out["incumbent_accuracy"] = holder["version"], accuracy
        if manifest["metrics"]["accuracy"] <= accuracy:
            return {**out, "reason": "not better than the alias holder on the validation images"}
    ctx.registry.promote(manifest["version"], alias, by=f"job {job_id}")
    return {**out, "promoted": True}


def incumbent_accuracy(ctx: Context, manifest: dict, data: Dataset, dataset_url: str) -> float:
    """The alias holder's accuracy on this job's validation images, preprocessed its own way."""
    model = load_model(manifest, ctx.registry.weights(manifest), ctx.models.device)
    spec = manifest["preprocess"]
    if spec["input_size"] == data.val_x.shape[1]:
        x = data.val_x
    else:  # re-decode for the incumbent's own input size
        source = open_source(dataset_url, ctx.settings, ctx.store)
        x = torch.from_numpy(np.stack([preprocess(source.get(k), spec) for k in data.val_keys]))
    logits = predict(model, x, spec=spec, device=ctx.models.device,
                     precision=ctx.models.precision)
    return metrics_from(logits, data.val_y, data.classes)["accuracy"]
