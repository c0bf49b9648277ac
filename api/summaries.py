"""A finished job's whole summary (summary.json: every group) as JSON or as summary.csv, and a
video job's timeline as timeline.csv."""

from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify

from api.auth import visible
from api.services import services
from facesense.errors import Conflict, NotFound
from facesense.outputs.results import summary_csv, timeline_csv
from facesense.storage import layout

bp = Blueprint("summaries", __name__, url_prefix="/v1/jobs")


def full_summary(job_id: str) -> dict:
    """summary.json of a job with results: every group, where the record keeps the largest."""
    s = services()
    record = visible(s.jobs.get(job_id))
    if not record.get("results"):  # succeeded, or cancelled with its partial results merged
        raise Conflict(f"job {job_id} has no results yet (status: {record['status']})")
    return json.loads(s.store.get(layout.job_key(job_id, layout.SUMMARY)))


@bp.get("/<job_id>/summary")
def summary(job_id: str):
    """The whole summary: shares with intervals per group and label, and the comparisons."""
    return jsonify(full_summary(job_id))


@bp.get("/<job_id>/summary.csv")
def summary_as_csv(job_id: str):
    """summary.csv: one row per group and label (count, share, Wilson 95 % interval)."""
    return Response(summary_csv(full_summary(job_id)), mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename={job_id}-summary.csv"})


@bp.get("/<job_id>/timeline.csv")
def timeline_as_csv(job_id: str):
    """timeline.csv: a video job's curve, a row per group, bin and label (404: no video rows)."""
    text = timeline_csv(full_summary(job_id))
    if text is None:
        raise NotFound(f"job {job_id} has no timeline: it scored no video frames")
    return Response(text, mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename={job_id}-timeline.csv"})


def openapi_paths() -> dict:
    """This blueprint's routes for /openapi.json (api/openapi/ merges them into its paths)."""
    from api.openapi.builders import obj, op, path_param

    number, interval = {"type": "number"}, {"type": ["array", "null"], "items": {"type": "number"},
                                            "minItems": 2, "maxItems": 2}
    cell = obj({"count": {"type": "integer"}, "share": number, "ci95": interval,
                "mean_confidence": {"type": ["number", "null"]},
                "share_of_faces": {"type": "number", "description": "a video group's pooled share "
                                   "of faces; its share and ci95 are then means over viewers"}},
               ("count", "share", "ci95"))
    tally = obj({"images": {"type": "integer"}, "scored": {"type": "integer"},
                 "failed": {"type": "integer"},
                 "labels": {"type": "object", "additionalProperties": cell}, **video_tally()},
                ("images", "scored", "failed", "labels"))
    comparison = comparison_schema()
    whole = obj({"classes": {"type": "array", "items": {"type": "string"}}, "overall": tally,
                 "groups": {"type": "object", "additionalProperties": tally},
                 "comparisons": {"type": "array", "items": comparison},
                 "comparisons_left_out": {"type": "array", "items": {"type": "string"}},
                 "timeline_bin_s": {"type": "number", "description": "a video job's: its bins"},
                 "baseline": {"type": "boolean", "description": "a video job's: each viewer's "
                              "resting face subtracted"}, "baseline_note": {"type": "string"}},
                ("classes", "overall", "groups", "comparisons", "comparisons_left_out"))
    job_id = path_param("job_id")
    paths = {
        "/v1/jobs/{job_id}/summary": {"get": op(
            "A finished job's whole summary (every group): per group and label count, share, "
            "Wilson 95 % interval; Fisher comparisons between groups, Holm-adjusted, and the "
            "images per group a comparison that is not significant would need", 200,
            whole, (404, 409, 503), params=(job_id,))},
        "/v1/jobs/{job_id}/summary.csv": {"get": op(
            "summary.csv: one row per group and label (group, label, count, share, ci95_low, "
            "ci95_high)", 200, {"type": "string"}, (404, 409, 503), params=(job_id,))},
    }
    paths["/v1/jobs/{job_id}/timeline.csv"] = {"get": op(
        "timeline.csv, a video job's curve over viewers: one row per group, bin and label (group, "
        "t0, t1, viewers, label, share, ci95_low, ci95_high; the interval a t-interval over "
        "viewers); 404 for a job without video rows", 200, {"type": "string"}, (404, 409, 503),
        params=(job_id,))}
    for path in ("/v1/jobs/{job_id}/summary.csv", "/v1/jobs/{job_id}/timeline.csv"):
        paths[path]["get"]["responses"]["200"]["content"] = {
            "text/csv": {"schema": {"type": "string"}}}  # not JSON: it says what it is
    return paths


def comparison_schema() -> dict:
    """A summary's comparison between two groups for one label, with the sample size a
    difference that is not significant would need."""
    from api.openapi.builders import obj

    number = {"type": "number"}
    sample_size = obj({
        "per_group": {"type": ["integer", "null"], "description": "images (faces, with faces on) "
                      "per group that would find the observed difference significant with this "
                      "power: Fleiss' continuity-corrected two-proportion n; null: see reason"},
        "alpha": {"type": "number", "description": "the level it is computed at: 0.05 over the "
                  "label's number of pairs (Holm's first step)"},
        "power": number, "reason": {"type": ["string", "null"], "description": "why per_group "
                                    "is null: no difference observed, or over 100,000"}},
        ("per_group", "alpha", "power", "reason"))
    return obj({"label": {"type": "string"}, "a": {"type": "string"},
                      "b": {"type": "string"}, "share_a": number, "share_b": number,
                      "difference": number, "p_value": number, "p_adjusted": number,
                      "significant": {"type": "boolean"},
                      "sample_size": {**sample_size, "type": ["object", "null"],
                                      "description": "null when significant (or in a summary "
                                      "written before it existed)"}},
                     ("label", "a", "b", "share_a", "share_b", "difference", "p_value",
                      "p_adjusted", "significant"))


def video_tally() -> dict:
    """A video job's parts of a group's (and the overall) summary, for /openapi.json."""
    from api.openapi.builders import obj

    per_label = {"type": "object", "additionalProperties": {"type": ["number", "null"]}}
    interval = {"type": ["array", "null"], "items": {"type": "number"}}
    return {
        "viewers": {"type": "integer", "description": "a video job's: viewers (videos) with a "
                    "face during the ad"},
        "viewer_shares": {"type": "object", "description": "per label the mean over viewers of "
                          "each viewer's overall share, with a t-interval over viewers"},
        "timeline": {"type": "array", "description": "summary.json only (not the record)",
                     "items": obj({"t0": {"type": "number"}, "t1": {"type": "number"},
                                   "viewers": {"type": "integer"}, "faces": {"type": "integer"},
                                   "share": per_label, "ci95": {"type": "object",
                                                                "additionalProperties": interval}},
                                  ("t0", "t1", "viewers", "faces", "share", "ci95"))},
        "peak": {"type": "object", "description": "per label the bin where its share is highest"},
        "per_viewer": {"type": "array", "description": "summary.json only: each viewer's video, "
                       "faces, resting_faces and overall share per label"}}
