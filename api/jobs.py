"""/v1/jobs: submit, list, poll, fetch results."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from api.schemas import CLASSIFY_FIELDS, check_fields, int_arg, json_body
from facesense.errors import BadRequest, Conflict
from facesense.jobs import COUNTERS, JobStatus, new_job_id
from facesense.queue import PLAN_CLASSIFY
from facesense.results import job_key, read_page
from facesense.sources import normalize_source, save_uploads, upload_source

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


def services():
    """The app's Services."""
    return current_app.extensions["facesense"]


def public(record: dict) -> dict:
    """A job record as the API shows it: counters grouped under progress."""
    out = {k: v for k, v in record.items() if k not in COUNTERS}
    out["progress"] = {k: record.get(k, 0) for k in COUNTERS}
    return out


@bp.post("")
def submit():
    """Queue a job from JSON {type, source, model} or multipart (type=classify + files)."""
    s = services()
    job_id = new_job_id()
    if request.mimetype == "multipart/form-data":
        form = check_fields(request.form.to_dict(), {"type": str, "model": str}, ("type",))
        files = [(f.filename or "", f.stream) for key in request.files
                 for f in request.files.getlist(key)]
        if form["type"] != "classify":
            raise BadRequest("multipart uploads are for type 'classify'")
        if not files:
            raise BadRequest("the upload holds no files")
        model = s.registry.resolve(form.get("model") or s.settings.default_model)
        inputs = f"jobs/{job_id}/inputs"
        save_uploads(files, s.store.child(inputs), s.settings)
        source = upload_source(inputs)
    else:
        if request.mimetype != "application/json":
            raise BadRequest("send application/json or multipart/form-data")
        body = check_fields(json_body(request), CLASSIFY_FIELDS, ("type", "source"))
        if body["type"] != "classify":
            raise BadRequest(f"unknown job type {body['type']!r}: use 'classify'")
        source = normalize_source(body["source"], s.settings)
        model = s.registry.resolve(body.get("model") or s.settings.default_model)
        form = body
    record = s.jobs.create("classify", job_id=job_id, source=source,
                           model=form.get("model") or s.settings.default_model,
                           model_version=model["version"], classes=model["classes"])
    s.celery.send_task(PLAN_CLASSIFY, args=[job_id])
    response = jsonify(public(record))
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return response, 202


@bp.get("")
def list_jobs():
    """Recent jobs, newest first."""
    limit = int_arg(request, "limit", 20, 1, 200)
    offset = int_arg(request, "offset", 0, 0, 1_000_000)
    return jsonify({"jobs": [public(r) for r in services().jobs.recent(limit, offset)],
                    "limit": limit, "offset": offset})


@bp.get("/<job_id>")
def get_job(job_id: str):
    """One job: status, progress, and once finished the summary and result locations."""
    return jsonify(public(services().jobs.get(job_id)))


@bp.get("/<job_id>/results")
def results(job_id: str):
    """Result rows as paginated JSON, or the whole CSV streamed with ?format=csv."""
    s = services()
    record = s.jobs.get(job_id)
    if record["status"] != JobStatus.SUCCEEDED.value:
        raise Conflict(f"job {job_id} has no results yet (status: {record['status']})")
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        stream = s.store.open(job_key(job_id, "results.csv"))

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
    total = record.get("total", 0)
    next_offset = offset + len(rows) if offset + len(rows) < total else None
    return jsonify({"job_id": job_id, "total": total, "offset": offset, "limit": limit,
                    "next_offset": next_offset, "rows": rows})
