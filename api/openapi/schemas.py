"""The OpenAPI document's component schemas: jobs, rows, models, training params."""

from __future__ import annotations

import dataclasses

from api.openapi.builders import obj, ref
from facesense.state.joblist import NAME_MAX, TAG_MAX, TAGS_MAX
from facesense.state.scheduler import PRIORITIES
from facesense.state.status import COUNTERS, FINISHED, JobStatus
from facesense.trainparams import PROMOTE_POLICIES, TrainParams

NULLABLE_STR = {"type": ["string", "null"]}
NUMBER_OR_NULL = {"type": ["number", "null"]}


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
            "face_score": NUMBER_OR_NULL,
            "t": {**NUMBER_OR_NULL, "description": "a job with videos: a video frame's seconds "
                  "from its t0 (3 decimals); null for a photo. A photo-only job has no t"},
            "frame": {"type": ["integer", "null"], "description": "a job with videos: the "
                      "sampled frame's index in its video; null for a photo"}},
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

