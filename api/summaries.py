"""A finished job's whole summary (summary.json: every group) as JSON or as summary.csv."""

from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify

from api.auth import visible
from api.services import services
from facesense.errors import Conflict
from facesense.outputs.results import summary_csv
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


def openapi_paths() -> dict:
    """This blueprint's routes for /openapi.json (api/openapi.py merges them into its paths)."""
    from api.openapi import obj, op, path_param

    number, interval = {"type": "number"}, {"type": ["array", "null"], "items": {"type": "number"},
                                            "minItems": 2, "maxItems": 2}
    cell = obj({"count": {"type": "integer"}, "share": number, "ci95": interval,
                "mean_confidence": {"type": ["number", "null"]}}, ("count", "share", "ci95"))
    tally = obj({"images": {"type": "integer"}, "scored": {"type": "integer"},
                 "failed": {"type": "integer"},
                 "labels": {"type": "object", "additionalProperties": cell}},
                ("images", "scored", "failed", "labels"))
    sample_size = obj({
        "per_group": {"type": ["integer", "null"], "description": "images (faces, with faces on) "
                      "per group that would find the observed difference significant with this "
                      "power: Fleiss' continuity-corrected two-proportion n; null: see reason"},
        "alpha": {"type": "number", "description": "the level it is computed at: 0.05 over the "
                  "label's number of pairs (Holm's first step)"},
        "power": number, "reason": {"type": ["string", "null"], "description": "why per_group "
                                    "is null: no difference observed, or over 100,000"}},
        ("per_group", "alpha", "power", "reason"))
    comparison = obj({"label": {"type": "string"}, "a": {"type": "string"},
                      "b": {"type": "string"}, "share_a": number, "share_b": number,
                      "difference": number, "p_value": number, "p_adjusted": number,
                      "significant": {"type": "boolean"},
                      "sample_size": {**sample_size, "type": ["object", "null"],
                                      "description": "null when significant (or in a summary "
                                      "written before it existed)"}},
                     ("label", "a", "b", "share_a", "share_b", "difference", "p_value",
                      "p_adjusted", "significant"))
    whole = obj({"classes": {"type": "array", "items": {"type": "string"}}, "overall": tally,
                 "groups": {"type": "object", "additionalProperties": tally},
                 "comparisons": {"type": "array", "items": comparison},
                 "comparisons_left_out": {"type": "array", "items": {"type": "string"}}},
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
    paths["/v1/jobs/{job_id}/summary.csv"]["get"]["responses"]["200"]["content"] = {
        "text/csv": {"schema": {"type": "string"}}}  # not JSON: it says what it is
    return paths
