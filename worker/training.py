"""A training job in the worker: a lease, the job record's updates, and the one pipeline."""

from __future__ import annotations

import logging

from facesense.state.leases import Lease, LeaseLost
from facesense.state.status import JobStatus
from facesense.storage.layout import checkpoint_key
from facesense.trainparams import TrainParams
from trainer.data import Dataset
from trainer.engine import Stopped
from trainer.pipeline import train_version
from trainer.train import Checkpoints
from worker.context import Context

log = logging.getLogger(__name__)


def run_training(ctx: Context, job_id: str) -> dict | None:
    """Train, register and maybe promote; resumes from the last checkpoint when redelivered.

    A lease in Redis, renewed by a heartbeat, keeps a redelivered copy of the task from
    training beside a live worker; once the lease lapses (the worker died), a copy takes over.
    """
    record = ctx.jobs.get(job_id)
    if JobStatus(record["status"]).finished:
        return None
    try:
        with Lease(ctx.leases, job_id, ctx.settings.lease_ttl_s) as lease:
            return _train(ctx, job_id, record, lease)
    except LeaseLost:
        log.warning("job %s: lease lost; leaving the job to the worker that holds it", job_id)
        return None


def _train(ctx: Context, job_id: str, record: dict, lease: Lease) -> dict | None:
    params = TrainParams.parse(record["params"])
    ctx.jobs.set_status(job_id, JobStatus.RUNNING, device=str(ctx.models.device),
                        precision=ctx.models.precision)
    checkpoints = Checkpoints(ctx.store, checkpoint_key(job_id), ctx.settings.checkpoint_interval_s)
    history: list[dict] = list((checkpoints.load() or {}).get("history", []))

    def on_data(data: Dataset) -> None:
        ctx.jobs.update(job_id, classes=data.classes, dataset_info={
            "fingerprint": data.fingerprint, "counts": data.counts, "skipped": len(data.skipped),
            **({"no_face": data.no_face} if params.faces else {}),
            "skipped_examples": data.skipped[:20]}, total=params.epochs)

    def on_epoch(row: dict) -> None:
        history.append(row)
        ctx.jobs.update(job_id, done=row["epoch"], epoch=row["epoch"], history=history,
                        metrics={k: v for k, v in row.items() if k != "epoch"})

    def cancelled() -> bool:
        lease.check()
        return ctx.jobs.get_field(job_id, "status") == JobStatus.CANCELLED.value

    try:
        trained = train_version(
            ctx.sources.get(record["dataset"]), record["dataset"], params, settings=ctx.settings,
            registry=ctx.registry, device=ctx.models.device, precision=ctx.models.precision,
            threads=ctx.threads, checkpoints=checkpoints, on_data=on_data, on_epoch=on_epoch,
            should_stop=cancelled, job_id=job_id, promote_policy=record.get("promote", "never"),
            promoted_by=f"job {job_id}")
    except Stopped:
        log.info("job %s cancelled during training", job_id)
        ctx.jobs.archive(job_id)
        return None
    manifest = trained.manifest
    if ctx.jobs.set_status(job_id, JobStatus.SUCCEEDED, model_version=manifest["version"],
                           metrics=manifest["metrics"], promotion=trained.promotion,
                           history=trained.result.history):
        ctx.jobs.archive(job_id)
        checkpoints.delete()  # ~1 GB of optimiser state, useless once the version exists
    return manifest
