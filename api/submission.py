"""Queueing a job: a scoring job on a source, URLs, uploads or a manifest, or a training job;
its checked options, its record with the exact model version, and its first task sent."""

from __future__ import annotations

from typing import BinaryIO

from flask import request
from werkzeug.exceptions import Forbidden

from api.auth import caller, require_admin
from api.schemas import UPLOAD_FIELDS, check_fields
from api.services import services
from facesense.errors import BadRequest, TransientError
from facesense.inputs import scopes
from facesense.inputs.dataset_check import check_dataset
from facesense.inputs.manifests import read_manifest, save_manifest
from facesense.inputs.sources import normalize_source, open_source, upload_source
from facesense.inputs.uploads import save_uploads, upload_or_nothing
from facesense.inputs.urls import save_url_list
from facesense.inputs.video.limits import VideoLimits
from facesense.inputs.video.limits import job_fields as video_fields
from facesense.outputs.timeline import job_fields as timeline_fields
from facesense.outputs.webhooks import check_callback_url
from facesense.pretrained import check_available
from facesense.queue import PLAN_CLASSIFY, TRAIN, sender
from facesense.queue import lifecycle as lifecycle_of
from facesense.registry import check_name
from facesense.state.joblist import labels
from facesense.state.lifecycle import Lifecycle
from facesense.state.scheduler import PRIORITIES
from facesense.state.status import new_job_id
from facesense.storage import layout
from facesense.trainparams import PROMOTE_POLICIES, TrainParams

SKIPPED_LISTED = 100  # skipped .zip members named on the job record (all are counted)


def submit_classify(body: dict) -> dict:
    """A scoring job on an S3 prefix, a server-side folder, or a list of image URLs."""
    s = services()
    extra = {**callback(body), **priority(body), **faces_choice(body), **labels(body),
             **timeline_fields(body), **video_fields(body, VideoLimits.from_settings(s.settings))}
    if sum(k in body for k in ("source", "urls", "manifest")) != 1:
        raise BadRequest("give exactly one of 'source', 'urls' and 'manifest'")
    if "group_by" in body and "manifest" not in body:
        raise BadRequest("group_by names a column of a manifest: give 'manifest' too")
    grants, mine = caller().grants, own_settings()
    if "manifest" in body:
        model = resolve_model(body.get("model"))
        scopes.check(body["manifest"], grants, "manifest")  # first: says nothing of existence
        stream, base = read_manifest(body["manifest"], mine)
        with stream:  # read line by line as it is checked: never whole in memory
            return queue_manifest(stream, body["manifest"], base, body.get("group_by"), model,
                                  extra)
    if "urls" in body:
        model = resolve_model(body.get("model"))  # fail before storing anything
        job_id = new_job_id()
        source = save_url_list(body["urls"], s.store, job_id, s.settings)
        return queue_classify(job_id, source, model, **extra)
    scopes.check(body["source"], grants, "source")
    source = normalize_source(body["source"], mine)
    return queue_classify(new_job_id(), source, resolve_model(body.get("model")), **extra)


def own_settings():
    """The settings with the caller's readable roots (its key's own, if it has a scope)."""
    return scopes.scoped_settings(services().settings, scopes.scope_of(caller().grants))


def queue_manifest(data: BinaryIO, name: str, base: str, group_by: str | None,
                   model: tuple[str, dict], extra: dict) -> dict:
    """A scoring job over a manifest: checked line by line, its checked copy stored under the
    job (nothing is left behind if it is refused or can't be queued), then queued."""
    s = services()
    job_id = new_job_id()
    with upload_or_nothing(s.store, layout.inputs(job_id)):
        source, about = save_manifest(data, name, base, group_by, s.store, job_id, own_settings(),
                                      check=scopes.line_check(caller().grants, base))
        return queue_classify(job_id, source, model, manifest=about, **extra)


def callback(body: dict) -> dict:
    """The job's checked callback_url as record fields (none if not given)."""
    if "callback_url" not in body:
        return {}
    return {"callback_url": check_callback_url(body["callback_url"], services().settings)}


def priority(body: dict) -> dict:
    """The job's checked priority as a record field (normal if not given)."""
    value = body.get("priority", "normal")
    if value not in PRIORITIES:
        raise BadRequest(f"priority must be one of {', '.join(PRIORITIES)} (got {value!r})")
    if value == "high" and not caller().may_use_high:  # a right: else one key starves all
        raise Forbidden("priority 'high' needs an admin key or a key granted 'high' "
                        "(NAME:SHA256HEX:high in FACESENSE_API_KEYS or the keys file)")
    return {"priority": value}


def faces_choice(body: dict) -> dict:
    """The job's checked faces choice as a record field (none: the model version decides)."""
    value = body.get("faces")
    if value is None:
        return {}
    if isinstance(value, str):  # a multipart form's text field
        if value.lower() not in ("true", "false", "1", "0"):
            raise BadRequest(f"faces must be true or false (got {value!r})")
        value = value.lower() in ("true", "1")
    return {"faces": value}


def submit_upload() -> dict:
    """A scoring job on uploaded files, stored before anything is queued."""
    s = services()
    form = check_fields(request.form.to_dict(), UPLOAD_FIELDS, ("type",))
    if form["type"] != "classify":
        raise BadRequest("multipart uploads are for type 'classify'")
    extra = {**callback(form), **priority(form), **faces_choice(form), **labels(form),
             **timeline_fields(form), **video_fields(form, VideoLimits.from_settings(s.settings))}
    if "manifest" in request.files:
        return submit_manifest_upload(form, extra)
    if "group_by" in form:
        raise BadRequest("group_by names a column of a manifest: upload one as the 'manifest' field")
    files = [(f.filename or "", f.stream) for key in request.files
             for f in request.files.getlist(key)]
    if not files:
        raise BadRequest("the upload holds no files")
    model = resolve_model(form.get("model"))  # fail before storing anything
    job_id = new_job_id()
    inputs = layout.inputs(job_id)
    skipped: list[dict] = []  # a .zip's non-image members: reported on the job, not scored
    with upload_or_nothing(s.store, inputs) as target:  # any error: no upload left behind
        save_uploads(files, target, s.settings, skipped)
        if skipped:
            extra.update(skipped=skipped[:SKIPPED_LISTED], skipped_count=len(skipped))
        return queue_classify(job_id, upload_source(inputs), model, **extra)


def submit_manifest_upload(form: dict, extra: dict) -> dict:
    """A scoring job over an uploaded manifest (one 'manifest' file and no images: its images
    are absolute paths under the allowed roots, s3:// URIs or http(s) URLs)."""
    parts = [(key, f) for key in request.files for f in request.files.getlist(key)]
    if len(parts) != 1:
        raise BadRequest("a manifest upload holds one file, the 'manifest' field, and no images")
    upload = parts[0][1]
    model = resolve_model(form.get("model"))  # its size is checked as it is read
    return queue_manifest(upload.stream, upload.filename or "manifest", "", form.get("group_by"),
                          model, extra)


def resolve_model(name: str | None) -> tuple[str, dict]:
    """The model a job names (or the default) and the exact version it resolves to now: a job
    records that version once, here, and every worker step uses it."""
    name = name or services().settings.default_model
    return name, services().registry.resolve(name)


def queue_classify(job_id: str, source: str, model: tuple[str, dict], **fields) -> dict:
    """Record a scoring job with the exact model version, then queue its planner."""
    name, manifest = model
    if fields.get("faces") is None:  # a version trained on faces crops them unless told not to
        fields["faces"] = bool(manifest.get("faces"))
    settings = services().settings  # the key's quotas, fixed when the job is queued
    quota = {"jobs": settings.key_max_running_jobs, "shards": settings.key_max_shards}
    if "scope" not in fields:  # workers and thumbnails read its local files under it
        fields["scope"] = scopes.scope_of(caller().grants)
    if fields["scope"] is None:
        del fields["scope"]
    record = services().jobs.create("classify", job_id=job_id, source=source, model=name,
                                    model_version=manifest["version"],
                                    classes=manifest["classes"], owner=caller().name,
                                    quota=quota, **fields)
    return send(record, PLAN_CLASSIFY)


def send(record: dict, task: str) -> dict:
    """Queue a job's first task; if the broker refuses, the job fails now (never stuck queued)."""
    s = services()
    try:
        s.celery.send_task(task, args=[record["id"]])
    except Exception as e:
        lifecycle(s).fail(record["id"], f"could not queue the job: {e}")
        raise TransientError(f"could not queue the job: {type(e).__name__}") from None
    confirm(record["id"], "its submission")
    return record


def lifecycle(s) -> Lifecycle:
    """The app's services as the job lifecycle (the workers' own) uses them."""
    return lifecycle_of(s.jobs, s.sched, sender(s.celery))


def confirm(job_id: str, what: str) -> None:
    """With sentinels, answer only once a replica holds the job's writes: an answered request
    is the one thing a failover could lose that no worker can redo (see README, Sentinel)."""
    s = services()
    wait_ms = s.settings.redis_wait_ms
    if s.settings.redis_sentinels and wait_ms and not s.jobs.replicated(job_id, wait_ms):
        raise TransientError(f"job {job_id}: {what} reached the Redis primary but no replica "
                             f"within {wait_ms} ms; a failover could lose it: GET the job, and "
                             "repeat the request if it is missing or unchanged")


def submit_train(body: dict) -> dict:
    """A training job on the training queue."""
    s = services()
    extra = {**callback(body), **labels(body)}
    scopes.check(body["dataset"], caller().grants, "dataset")
    dataset = normalize_source(body["dataset"], own_settings())
    params = TrainParams.parse(body.get("params"))
    if params.base:
        s.registry.resolve(params.base)  # 404 now rather than a failed job later
    promote = body.get("promote", "never")
    if promote not in PROMOTE_POLICIES:
        raise BadRequest(f"promote must be one of {', '.join(PROMOTE_POLICIES)}")
    if promote != "never":  # moving the alias changes every other caller's default model
        require_admin(f"promote={promote!r}")
    alias = check_name(body.get("alias", "production"), "alias")
    if params.pretrained and not params.base:  # a 409 naming the fix now, not a failed job later
        check_available(s.store, s.settings)
    # the layout's problem as a 400 now, not a run failing minutes later (a bounded listing)
    check_dataset(open_source(dataset, own_settings(), s.store), body["dataset"])
    scope = scopes.scope_of(caller().grants)  # the worker reads the dataset under it
    quota = {"jobs": s.settings.key_max_running_jobs}  # a training run is one of its key's jobs
    record = s.jobs.create("train", dataset=dataset, params=params.to_dict(), promote=promote,
                           alias=alias, owner=caller().name, quota=quota,
                           **({"scope": scope} if scope else {}), **extra)
    return send(record, TRAIN)
