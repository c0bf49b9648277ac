"""/v1/jobs: submit, list, poll, retry, cancel, fetch results (the submission itself:
api.submission)."""

from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, request, stream_with_context

from api.auth import visible
from api.manage import list_page
from api.schemas import CLASSIFY_FIELDS, TRAIN_FIELDS, check_fields, int_arg, json_body
from api.services import services
from api.submission import (
    confirm,
    lifecycle,
    priority,
    queue_classify,
    resolve_model,
    submit_classify,
    submit_train,
    submit_upload,
)
from facesense.errors import BadRequest, Conflict
from facesense.outputs.results import failed_images, read_page, rows_in
from facesense.outputs.timeline import job_fields as timeline_fields
from facesense.state.records import public_record
from facesense.state.status import JobStatus, new_job_id
from facesense.storage import layout

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


@bp.post("")
def submit():
    """Queue a job: JSON {type: classify, source, model} or {type: train, dataset, params,
    promote}, or multipart (type=classify + files)."""
    if request.mimetype == "multipart/form-data":
        record = submit_upload()
    elif request.mimetype == "application/json":
        body = json_body(request)
        kind = body.get("type")
        if kind == "classify":
            record = submit_classify(check_fields(body, CLASSIFY_FIELDS, ("type",)))
        elif kind == "train":
            record = submit_train(check_fields(body, TRAIN_FIELDS, ("type", "dataset")))
        else:
            raise BadRequest(f"unknown job type {kind!r}: use 'classify' or 'train'")
    else:
        raise BadRequest("send application/json or multipart/form-data")
    response = jsonify(public_record(record))
    response.headers["Location"] = f"/v1/jobs/{record['id']}"
    return response, 202


@bp.post("/<job_id>/retry")
def retry(job_id: str):
    """Score again only the images that failed in a finished scoring job, as a new job."""
    s = services()
    body = check_fields(json_body(request, allow_empty=True), {"model": str, "priority": str}, ())
    old = visible(s.jobs.get(job_id))
    if old["type"] != "classify" or old["status"] != JobStatus.SUCCEEDED.value:
        raise Conflict(f"job {job_id} is not a finished scoring job with results "
                       f"(type {old['type']}, status {old['status']})")
    keys = failed_images(s.store, job_id)
    if not keys:
        raise Conflict(f"job {job_id} has no failed images to retry")
    new_id = new_job_id()
    s.store.put(layout.job_key(new_id, layout.RETRY_KEYS), json.dumps(keys).encode())
    fields = {"manifest": old["manifest"]} if "manifest" in old else {}
    fields.update({k: old[k] for k in ("name", "tags") if old.get(k)})  # the same test again
    if fields:  # its rows join the same manifest lines: a copy in its own folder, read as one
        with s.store.open(layout.manifest(job_id)) as stream:
            s.store.put_stream(layout.manifest(new_id), stream)
    # By default the exact version the job recorded (never an alias that shares its name).
    model = resolve_model(body["model"]) if body.get("model") else (
        old["model_version"], s.registry.manifest(old["model_version"]))
    fields["scope"] = old.get("scope")  # read as the first job was, whoever retries it
    fields.update(timeline_fields(old))  # a video job's bins and baseline, as they were
    fields.update({"video_fps": old["video_fps"]} if old.get("video_fps") else {})
    record = queue_classify(new_id, old["source"], model, retry_of=job_id, **fields,
                            faces=old.get("faces", False),
                            **priority({"priority": body.get("priority", old.get("priority", "normal"))}))
    response = jsonify(public_record(record))
    response.headers["Location"] = f"/v1/jobs/{new_id}"
    return response, 202


@bp.post("/<job_id>/cancel")
def cancel(job_id: str):
    """Stop a job: queued work is skipped, running work stops at its next batch."""
    s = services()
    record = visible(s.jobs.get(job_id))
    # a scoring job's webhook waits for a worker to merge its partial results
    if not lifecycle(s).cancel(job_id):
        raise Conflict(f"job {job_id} already finished (status: {record['status']})")
    confirm(job_id, "its cancel")
    return jsonify(public_record(s.jobs.archive(job_id)))


@bp.get("")
def list_jobs():
    """Recent jobs, newest first: the caller's own, or every job for an admin key; filtered
    by name prefix, tag, status and creation time (api.manage.list_page)."""
    return jsonify(list_page(request))


@bp.get("/<job_id>")
def get_job(job_id: str):
    """One job: status, progress, where it stands in the queue while it waits, and once
    finished the summary and result locations."""
    s = services()
    record = public_record(visible(s.jobs.get(job_id)))
    if record["type"] == "classify" and not JobStatus(record["status"]).finished:
        standing = s.sched.standing(job_id)
        if standing is not None:
            why = held_reason(standing["held"], record.get("quota") or {})
            if why is None and standing["training_ahead"] and record["status"] == JobStatus.QUEUED:
                why = (f"waiting: {standing['training_ahead']} training job(s) hold workers that "
                       "also serve the inference queue (a worker runs one task at a time); its "
                       "shards start when a training ends or a scoring worker is free")
            record["queue"] = {**standing, "held": why}
    return jsonify(record)


def held_reason(why: str | None, quota: dict) -> str | None:
    """What a quota holding a job back means, in words."""
    if why == "jobs":
        return (f"held: this API key already has {quota.get('jobs')} jobs running, scoring or "
                "training (FACESENSE_KEY_MAX_RUNNING_JOBS); it starts when one of them ends")
    if why == "shards":
        return (f"held: this API key already has {quota.get('shards')} shards in flight, "
                "its share of the workers (FACESENSE_KEY_MAX_SHARDS)")
    return None


@bp.get("/<job_id>/results")
def results(job_id: str):
    """Result rows as paginated JSON, or the whole CSV streamed with ?format=csv."""
    s = services()
    record = visible(s.jobs.get(job_id))
    if not record.get("results"):  # succeeded, or cancelled with its partial results merged
        raise Conflict(f"job {job_id} has no results yet (status: {record['status']})")
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        stream = s.store.open(layout.job_key(job_id, layout.RESULTS_CSV))

        def chunks():
            with stream:
                while chunk := stream.read(1 << 16):
                    yield chunk

        return Response(stream_with_context(chunks()), mimetype="text/csv",
                        headers={"Content-Disposition": f"attachment; filename={job_id}.csv"})
    if fmt != "json":
        raise BadRequest("format must be 'json' or 'csv'")
    limit = int_arg(request, "limit", 100, 1, 1000)
    offset = int_arg(request, "offset", 0, 0, 10**9)
    rows = read_page(s.store, job_id, offset, limit)
    # the rows in the results: all images (with faces: all faces, and one row for each photo
    # without a face or failed), or a cancelled job's partial share of them
    total = rows_in(record["summary"]["overall"]) if record.get("summary") else record.get("total", 0)
    next_offset = offset + len(rows) if rows and offset + len(rows) < total else None
    return jsonify({"job_id": job_id, "total": total, "offset": offset, "limit": limit,
                    "next_offset": next_offset, "rows": rows})

