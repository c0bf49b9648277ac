"""GET /openapi.json: an OpenAPI 3.1 description of every route (tests check none is missing).
A blueprint module may add its own routes with an `openapi_paths()` function."""

from __future__ import annotations

import dataclasses
import sys

from flask import Blueprint, current_app, jsonify

from api.auth import auth_enabled, public
from facesense.state.joblist import NAME_MAX, TAG_MAX, TAGS_MAX
from facesense.state.scheduler import PRIORITIES
from facesense.state.status import COUNTERS, FINISHED, JobStatus
from facesense.trainparams import PROMOTE_POLICIES, TrainParams

bp = Blueprint("openapi", __name__)

ERROR_TEXT = {400: "Malformed request: bad JSON, unknown fields or wrong types (named)",
              401: "No API key, or an invalid one", 403: "The key may not do this",
              404: "Unknown job, model version or alias", 409: "Conflicts with the job's state",
              413: "Request body too large", 422: "Unusable source or model",
              503: "Redis or storage unavailable"}
NULLABLE_STR = {"type": ["string", "null"]}
NUMBER_OR_NULL = {"type": ["number", "null"]}


def ref(name: str) -> dict:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict, required: tuple = (), closed: bool = False) -> dict:
    """A JSON object schema; closed ones refuse unknown fields (as the API does, with a 400)."""
    out = {"type": "object", "properties": props, "required": list(required)}
    if closed:
        out["additionalProperties"] = False
    return out


def param_schema(f: dataclasses.Field) -> dict:
    """One training param's JSON schema, from its type and limits."""
    kind = {"int": "integer", "float": "number", "bool": "boolean", "str": "string",
            "str | None": ["string", "null"], "bool | None": ["boolean", "null"]}[f.type]
    out: dict = {"type": kind, "description": f.metadata["help"]}
    if "lo" in f.metadata:
        out.update(minimum=f.metadata["lo"], maximum=f.metadata["hi"])
    if "choices" in f.metadata:
        out["enum"] = list(f.metadata["choices"])
    return out


LABELS = {"name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX,
                   "description": "the job's name (shown escaped; no control characters)"},
          "tags": {"type": "array", "maxItems": TAGS_MAX, "items": {
              "type": "string", "minLength": 1, "maxLength": TAG_MAX}, "description": "labels to "
              "find it by (no commas, no control characters)"}}
PRIORITY = {"type": "string", "enum": list(PRIORITIES), "default": "normal",
            "description": "high goes before queued normal shards (a right: an admin key, or a "
            "key granted 'high'; else 403); low runs when nothing else waits"}

TIMELINE_FIELDS = {  # a video job's (facesense.outputs.timeline)
    "timeline_bin_s": {"type": "number", "minimum": 0.1, "maximum": 60, "description": "the "
                       "summary's timeline bins, in seconds of video (default 1)"},
    "baseline": {"type": "boolean", "description": "subtract each viewer's label shares before "
                 "the ad's start (t0) from that viewer's curve (default false)"},
    "video_fps": {"type": "number", "exclusiveMinimum": 0, "description": "frames a second "
                  "sampled from each video, by presentation time (default FACESENSE_VIDEO_FPS, "
                  "at most FACESENSE_VIDEO_MAX_FPS)"}}

SCHEMAS = {
    "Error": obj({"error": obj({"code": {"type": "string"}, "message": {"type": "string"}},
                               ("code", "message"))}, ("error",)),
    "FinishedStatus": {"type": "string", "enum": list(FINISHED), "description": "the statuses "
                       "a job never leaves (the dashboard stops polling at them)"},
    "Job": obj({
        "id": {"type": "string"}, "type": {"type": "string", "enum": ["classify", "train"]},
        "status": {"type": "string", "enum": [s.value for s in JobStatus]},
        "created_at": {"type": "number"}, "started_at": NUMBER_OR_NULL,
        "finished_at": NUMBER_OR_NULL, "error": NULLABLE_STR,
        "owner": {**NULLABLE_STR, "description": "name of the API key that created the job"},
        "source": {"type": "string"}, "model": NULLABLE_STR, "model_version": NULLABLE_STR,
        "progress": obj({c: {"type": "integer"} for c in COUNTERS}, COUNTERS),
        "summary": {"type": ["object", "null"]}, "results": {"type": ["object", "null"]},
        "retry_of": {"type": "string"},
        "manifest": obj({"name": {"type": "string"}, "base": {"type": "string"},
                         "rows": {"type": "integer"},
                         "columns": {"type": "array", "items": {"type": "string"}},
                         "group_by": NULLABLE_STR})
        | {"description": "a manifest job's manifest: its meta columns and group_by"},
        "priority": PRIORITY,
        "faces": {"type": "boolean", "description": "faces are found and each scored (rows per "
                  "face); else whole images are scored"},
        **TIMELINE_FIELDS,
        "videos": {"type": "boolean", "description": "the job lists videos (results.csv has t "
                   "and frame)"},
        "scope": obj({"roots": {"type": "array", "items": {"type": "string"}},
                      "s3": {"type": "array", "items": {"type": "string"}}})
        | {"description": "the folders and S3 prefixes its API key may read, if the key is "
           "scoped; its files are read under them"},
        "held": {**NULLABLE_STR, "description": "a training job waiting for its key's "
                 "running-jobs quota"},
        "quota": obj({"jobs": {"type": "integer"}, "shards": {"type": "integer"}})
        | {"description": "the API key's quotas when the job was queued (0: none)"},
        "queue": obj({
            "priority": PRIORITY, "shards_waiting": {"type": "integer"},
            "jobs_ahead": {"type": "integer"},
            "shards_ahead": {"type": "integer", "description": "shards that start before this "
                             "job's next one"},
            "training_ahead": {"type": "integer", "description": "training runs holding workers "
                               "that also serve the inference queue"},
            "held": {**NULLABLE_STR, "description": "the quota holding the job back, if one does"}})
        | {"description": "while its shards wait (GET of one job only)"},
        "planned": {"type": "integer", "description": "shards planned so far (the source is "
                                                      "listed and its shards queued in batches)"},
        **LABELS,
        "timing": {"type": ["object", "null"], "description": "once started: unit (images or "
                   "epochs), elapsed_s, rate (units a second since it started) and eta_s (time "
                   "left at that rate; null while unknown, 0 once finished)", "properties": {
                       "unit": {"type": "string", "enum": ["images", "epochs"]},
                       "elapsed_s": {"type": "number"}, "rate": NUMBER_OR_NULL,
                       "eta_s": NUMBER_OR_NULL}}},
        ("id", "type", "status", "progress")),
    "ClassifyRequest": {"oneOf": [{"required": ["source"]}, {"required": ["urls"]},
                                  {"required": ["manifest"]}], **obj({
        "type": {"const": "classify"},
        "source": {"type": "string", "description": "s3://bucket/prefix or a server-side folder"},
        "urls": {"type": "array", "minItems": 1, "items": {"oneOf": [
                     {"type": "string"},
                     obj({"url": {"type": "string"}, "group": {"type": "string"}}, ("url",),
                         closed=True)]},
                 "description": "image URLs to score (http/https), instead of a source; an "
                                "entry may be {url, group}"},
        "manifest": {"type": "string", "description": "a CSV or JSON Lines file (a server-side "
                     "file or s3:// URL) whose 'image' column names each image; its other "
                     "columns are carried into each row's meta"},
        "group_by": {"type": "string", "description": "the manifest column the summary groups "
                     "by (default: each image's first-level folder)"},
        "model": {"type": "string", "description": "version or alias (default production)"},
        "callback_url": {"type": "string", "description": "URL told when the job finishes"},
        "priority": PRIORITY,
        "faces": {"type": "boolean", "description": "find every face and score each one (a row "
                  "per face); default: what the model version was trained on"},
        **TIMELINE_FIELDS,
        **LABELS},
        ("type",), closed=True)},
    "TrainRequest": obj({
        "type": {"const": "train"},
        "dataset": {"type": "string", "description": "s3://bucket/prefix or a server-side "
                                                     "folder in ImageFolder layout"},
        "params": obj({f.name: param_schema(f) for f in dataclasses.fields(TrainParams)},
                      closed=True),
        "promote": {"type": "string", "enum": list(PROMOTE_POLICIES), "description":
                    "never; if_better, always: only a version that beats chance; force: any"},
        "alias": {"type": "string", "description": "the alias promotion moves (production)"},
        "callback_url": {"type": "string", "description": "URL told when the job finishes"},
        **LABELS},
        ("type", "dataset"), closed=True),
    "Upload": obj({"type": {"type": "string", "enum": ["classify"]}, "model": {"type": "string"},
                   "callback_url": {"type": "string"}, "priority": PRIORITY,
                   "faces": {"type": "string", "enum": ["true", "false"]},
                   "timeline_bin_s": {"type": "string", "description": "a number, as in JSON"},
                   "baseline": {"type": "string", "enum": ["true", "false"]},
                   "video_fps": {"type": "string", "description": "a number, as in JSON"},
                   "files": {"type": "array", "items": {"type": "string",
                                                        "contentMediaType":
                                                            "application/octet-stream"}},
                   "manifest": {"type": "string", "contentMediaType": "text/csv",
                                "description": "a CSV or JSON Lines manifest instead of files "
                                               "(absolute paths, s3:// or http(s) images)"},
                   "group_by": {"type": "string", "description": "the manifest column the "
                                                                 "summary groups by"},
                   "name": LABELS["name"],
                   "tags": {"type": "string", "description": "tags, comma-separated"}},
                  ("type",)),
    "JobList": obj({"jobs": {"type": "array", "items": ref("Job")},
                    "limit": {"type": "integer"}, "offset": {"type": "integer"},
                    "next_cursor": {**NULLABLE_STR, "description": "pass as cursor for the "
                                    "next (older) page; null at the end"}},
                   ("jobs", "limit", "offset")),
    "ResultPage": obj({
        "job_id": {"type": "string"}, "total": {"type": "integer"},
        "offset": {"type": "integer"}, "limit": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]},
        "rows": {"type": "array", "items": obj({
            "image": {"type": "string"}, "group": {"type": "string"}, "label": NULLABLE_STR,
            "confidence": NUMBER_OR_NULL, "probs": {"type": ["object", "null"]},
            "error": NULLABLE_STR,
            "meta": {"type": "object", "description": "a manifest job's other columns"},
            "face": {"type": ["integer", "null"], "description": "a faces job's: the face's "
                     "number in its photo, largest first (null: no face, or the photo failed)"},
            "box": {"type": ["array", "null"], "items": {"type": "integer"},
                    "description": "the face's [x0, y0, x1, y1] in the photo's pixels"},
            "face_score": NUMBER_OR_NULL},
            ("image", "label", "error"))}},
        ("job_id", "total", "offset", "limit", "next_offset", "rows")),
    "Manifest": obj({"version": {"type": "string"},
                     "classes": {"type": "array", "items": {"type": "string"}},
                     "weights_sha256": {"type": "string"}, "created_at": {"type": "number"},
                     "metrics": {"type": ["object", "null"]}}, ("version", "classes")),
    "Alias": obj({"alias": {"type": "string"}, "version": {"type": "string"},
                  "history": {"type": "array", "items": obj({
                      "at": {"type": "number"}, "from": NULLABLE_STR, "to": {"type": "string"},
                      "by": {"type": "string"}}, ("at", "to"))}},
                 ("alias", "version", "history")),
    "Health": obj({"status": {"type": "string", "enum": ["ok", "degraded"]},
                   "redis": {"type": "string"}, "store": {"type": "string"}},
                  ("status", "redis", "store")),
}


def json_content(schema: dict) -> dict:
    """A JSON media type entry."""
    return {"application/json": {"schema": schema}}


def op(summary: str, ok: int, schema: dict, errors: tuple = (), *, params: tuple = (),
       body: dict | None = None, open_: bool = False, **extra) -> dict:
    """One operation: its success response, its JSON errors, and (unless open) the 401."""
    responses = {str(ok): {"description": summary, "content": json_content(schema)}}
    statuses = set(errors) | (set() if open_ or not auth_enabled() else {401})
    for status in sorted(statuses):
        responses[str(status)] = {"description": ERROR_TEXT[status],
                                  "content": json_content(ref("Error"))}
    out = {"summary": summary, "parameters": list(params), "responses": responses, **extra}
    if body:
        out["requestBody"] = body
    if open_:
        out["security"] = []
    return out


def path_param(name: str) -> dict:
    """A required string path parameter."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def query_int(name: str, default: int, note: str) -> dict:
    """An optional integer query parameter (out-of-range values are clamped)."""
    return {"name": name, "in": "query", "required": False, "description": note,
            "schema": {"type": "integer", "default": default}}


def _job_paths() -> dict:
    """The job routes: submit and list, one job, its results, retry and cancel."""
    job_id = path_param("job_id")
    page = (query_int("offset", 0, "first row"), query_int("limit", 100, "clamped to 1..1000"))
    submit_body = {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [ref("ClassifyRequest"), ref("TrainRequest")],
                                        "discriminator": {"propertyName": "type"}}},
        "multipart/form-data": {"schema": ref("Upload")}}}
    location = {"Location": {"schema": {"type": "string"}, "description": "the job's URL"}}
    paths = {
        "/v1/jobs": {
            "post": op("Queue a scoring or training job (a training job that promotes its "
                       "version needs an admin key)", 202, ref("Job"),
                       (400, 404, 409, 413, 422, 503) + ((403,) if auth_enabled() else ()),
                       body=submit_body),
            "get": op("Recent jobs, newest first (the caller's own; every job for an admin key)",
                      200, ref("JobList"), (400, 503), params=(
                          query_int("limit", 20, "clamped to 1..200"),
                          query_int("offset", 0, "jobs to skip")))},
        "/v1/jobs/{job_id}": {"get": op("One job's record", 200, ref("Job"), (404, 503),
                                        params=(job_id,))},
        "/v1/jobs/{job_id}/results": {"get": op(
            "Result rows, paginated JSON or the whole CSV", 200, ref("ResultPage"),
            (400, 404, 409, 503), params=(job_id, *page, {
                "name": "format", "in": "query", "required": False,
                "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"}}))},
        "/v1/jobs/{job_id}/retry": {"post": op(
            "Score a finished job's failed images again, as a new job", 202, ref("Job"),
            (400, 404, 409, 422, 503) + ((403,) if auth_enabled() else ()), params=(job_id,),
            body={"required": False, "content":
                json_content(obj({"model": {"type": "string"}, "priority": PRIORITY},
                                 closed=True))})},
        "/v1/jobs/{job_id}/cancel": {"post": op("Cancel a queued or running job", 200,
                                                ref("Job"), (404, 409, 503), params=(job_id,))},
    }
    paths["/v1/jobs"]["post"]["responses"]["202"]["headers"] = location
    paths["/v1/jobs/{job_id}/retry"]["post"]["responses"]["202"]["headers"] = location
    paths["/v1/jobs/{job_id}/results"]["get"]["responses"]["200"]["content"]["text/csv"] = {
        "schema": {"type": "string"}}
    return paths


def _model_paths() -> dict:
    """The model routes: every version and alias, one version, promote."""
    version = path_param("version")
    return {
        "/v1/models": {"get": op("Every version (newest first) and every alias", 200, obj(
            {"versions": {"type": "array", "items": ref("Manifest")},
             "aliases": {"type": "object", "additionalProperties": ref("Alias")}},
            ("versions", "aliases")), (503,))},
        "/v1/models/{version}": {"get": op(
            "One version's manifest and the aliases pointing at it", 200,
            {"allOf": [ref("Manifest"), obj({"aliases": {"type": "array", "items":
                                                         {"type": "string"}}}, ("aliases",))]},
            (404, 503), params=(version,))},
        "/v1/models/{version}/promote": {"post": op(
            "Point an alias (default production) at this version" +
            (" (admin keys only)" if auth_enabled() else ""), 200, ref("Alias"),
            (400, 404, 409, 503) + ((403,) if auth_enabled() else ()), params=(version,),
            body={"required": True, "content": json_content(
                obj({"alias": {"type": "string"}, "force": {"type": "boolean"}}, closed=True))})},
    }


def document() -> dict:
    """The OpenAPI document for this app (security reflects whether keys are configured)."""
    paths = {**_job_paths(), **_model_paths(),
             "/healthz": {"get": op("Redis and storage answer (503 names what failed)", 200,
                                    ref("Health"), open_=True)},
             "/openapi.json": {"get": op("This document", 200, {"type": "object"}, open_=True)}}
    for blueprint in current_app.blueprints.values():  # e.g. the dashboard's own routes
        extra = getattr(sys.modules.get(blueprint.import_name), "openapi_paths", None)
        if extra and blueprint.import_name != __name__:  # merged: a path may gain a method
            for path, operations in extra().items():
                paths.setdefault(path, {}).update(operations)
    paths["/healthz"]["get"]["responses"]["503"] = {
        "description": "Redis or storage down", "content": json_content(ref("Health"))}
    doc = {"openapi": "3.1.0",
           "info": {"title": "FaceSense", "version": "1",
                    "description": "Bulk image scoring and retraining jobs. Every error is "
                                   '{"error": {"code", "message"}}.'},
           "paths": paths, "components": {"schemas": SCHEMAS}}
    if auth_enabled():
        doc["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"apiKey": []}]
    return doc


@bp.get("/openapi.json")
@public
def openapi():
    """The OpenAPI document, open like /healthz so tools can discover the API."""
    doc = current_app.extensions.get("facesense_openapi")
    if doc is None:
        doc = current_app.extensions["facesense_openapi"] = document()
    return jsonify(doc)
