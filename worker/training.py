"""A training job in the worker: the job record's updates around the one pipeline."""

from __future__ import annotations

import logging

from facesense.queue import INFERENCE_QUEUE
from facesense.state.leases import Lease
from facesense.state.status import JobStatus
from facesense.storage.layout import checkpoint_key
from facesense.trainparams import TrainParams
from trainer.data import Dataset
from trainer.engine import Stopped
from trainer.pipeline import train_version
from trainer.train import Checkpoints
from worker.context import Context
from worker.runner import Held, lifecycle

log = logging.getLogger(__name__)


def run_training(ctx: Context, job_id: str, lease: Lease | None = None) -> dict | None:
    """Train, register and maybe promote; resumes from the last checkpoint when redelivered.

    The runner holds the job's lease (renewed by a heartbeat), so a redelivered copy of the
    task never trains beside a live worker; once it lapses (the worker died), a copy takes
    over. lease: checked between batches, so a worker that lost it stops.
    """
    record = ctx.jobs.get(job_id)
    if JobStatus(record["status"]).finished:
        return None
    shared = INFERENCE_QUEUE in ctx.serves  # this worker scores too: it holds scoring back
    claim(ctx, job_id, record)
    try:
        return _train(ctx, job_id, record, lease, shared)
    finally:
        if shared:
            ctx.sched.training_on_shared_workers(job_id, False, 0)


def claim(ctx: Context, job_id: str, record: dict) -> None:
    """Take one of the key's running-job slots (FACESENSE_KEY_MAX_RUNNING_JOBS) or wait: a
    training run counts as one of its key's jobs, like a scoring job."""
    quota = (record.get("quota") or {}).get("jobs", 0)
    if ctx.sched.claim_training(job_id, record.get("owner"), quota):
        if record.get("held"):
            ctx.jobs.update(job_id, held=None)
        return
    ctx.jobs.update(job_id, held=f"held: this API key already has {quota} jobs running, scoring "
                    "or training (FACESENSE_KEY_MAX_RUNNING_JOBS); it starts when one ends")
    raise Held(f"job {job_id}: its key's running-jobs quota is full")


def _train(ctx: Context, job_id: str, record: dict, lease: Lease | None,
           shared: bool = False) -> dict | None:
    params = TrainParams.parse(record["params"])
    ctx.jobs.set_status(job_id, JobStatus.RUNNING, device=str(ctx.models.device),
                        precision=ctx.models.precision)
    if shared:
        ctx.sched.training_on_shared_workers(job_id, True, 4 * ctx.settings.lease_ttl_s)
    checkpoints = Checkpoints(ctx.store, checkpoint_key(job_id), ctx.settings.checkpoint_interval_s)
    history: list[dict] = list((checkpoints.load() or {}).get("history", []))

    def on_data(data: Dataset) -> None:
        ctx.jobs.update(job_id, classes=data.classes, dataset_info={
            "fingerprint": data.fingerprint, "counts": data.counts, "skipped": len(data.skipped),
            **({"no_face": data.no_face} if data.faces else {}),
            "skipped_examples": data.skipped[:20]}, total=params.epochs)

    def on_epoch(row: dict) -> None:
        history.append(row)
        ctx.jobs.update(job_id, done=row["epoch"], epoch=row["epoch"], history=history,
                        metrics={k: v for k, v in row.items() if k != "epoch"})

    def cancelled() -> bool:  # between batches
        if lease is not None:
            lease.check()
        if shared:  # renewed, so a worker that died stops being named
            ctx.sched.training_on_shared_workers(job_id, True, 4 * ctx.settings.lease_ttl_s)
        return ctx.jobs.get_field(job_id, "status") == JobStatus.CANCELLED.value

    try:
        trained = train_version(
            ctx.sources.get(record["dataset"], record.get("scope")), record["dataset"], params,
            settings=ctx.settings,
            registry=ctx.registry, device=ctx.models.device, precision=ctx.models.precision,
            threads=ctx.threads, checkpoints=checkpoints, on_data=on_data, on_epoch=on_epoch,
            on_plan=lambda plan: ctx.jobs.update(job_id, training_plan=plan, total=plan["epochs"]),
            should_stop=cancelled, job_id=job_id, promote_policy=record.get("promote", "never"),
            alias=record.get("alias", "production"), promoted_by=f"job {job_id}")
    except Stopped:
        log.info("job %s cancelled during training", job_id)
        lifecycle(ctx).cancelled(job_id, announce=False)  # the cancel sent its webhook
        return None  # the row's cleanup (drop_checkpoints) deletes what the run wrote
    manifest = trained.manifest
    if lifecycle(ctx).finish(job_id, model_version=manifest["version"],
                             metrics=manifest["metrics"], chance=manifest.get("chance"),
                             promotion=trained.promotion, history=trained.result.history):
        checkpoints.delete()  # ~1 GB of optimiser state, useless once the version exists
    return manifest


def drop_checkpoints(ctx: Context, job_id: str) -> bool:
    """Delete a training job's checkpoints once it has ended, in any state; True if it had.

    The training row's cleanup, after each run of its task: a run that will be retried (a transient
    error, a lost lease, a killed worker) leaves its job unfinished, so the checkpoint it
    resumes from stays until the job ends (its retries spent, it fails, or it is cancelled).
    """
    status = ctx.jobs.get_field(job_id, "status")
    if status is None or not JobStatus(status).finished:
        return False
    # Each run leaves ~1 GB (weights, optimiser state, best weights): any key could fill the
    # disk by starting and cancelling runs.
    Checkpoints(ctx.store, checkpoint_key(job_id)).delete()
    return True
