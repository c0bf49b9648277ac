"""The web dashboard: the page at /, its static files, and the JSON it needs beyond /v1."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory

from api.auth import public, visible
from api.schemas import int_arg
from api.services import services
from facesense.errors import Conflict, NotFound, ObjectNotFound
from facesense.outputs.gallery import GalleryThumbs
from facesense.outputs.pages import ERRORS, NO_FACE, read_rows
from facesense.outputs.results import rows_in
from facesense.registry import check_name
from facesense.storage import layout

bp = Blueprint("dashboard", __name__)
STATIC = Path(__file__).resolve().parent / "static"
THUMBS = "facesense.thumbs"  # the app's GalleryThumbs (and its cache), in app.extensions


def thumbs() -> GalleryThumbs:
    """The current app's thumbnail maker, built on first use (one cache per API process)."""
    ext = current_app.extensions
    if THUMBS not in ext:
        s = services()
        ext[THUMBS] = GalleryThumbs(s.settings, s.store)
    return ext[THUMBS]


@bp.get("/")
@public  # the page itself holds nothing: its data calls carry the key the user pasted
def index():
    """The single-page dashboard (it fetches everything else as JSON)."""
    return send_from_directory(STATIC, "index.html", max_age=0)


@bp.get("/ui/static/<path:filename>")
@public
def static(filename: str):
    """The dashboard's scripts and styles (vendored: no build step, no CDN)."""
    # ES modules run only when served as JavaScript (and nosniff is on): say so rather than
    # trust the host's MIME table (some map .js to text/plain or application/javascript).
    kind = "text/javascript" if filename.endswith(".js") else None
    return send_from_directory(STATIC, filename, max_age=0, mimetype=kind)


@bp.get("/ui/api/jobs/<job_id>/gallery")
def gallery(job_id: str):
    """A page of a finished job's rows, filtered by label (or ERRORS) and group, with thumbnail
    URLs. Reads from the page's nearest indexed row; the total comes from the summary."""
    s = services()
    record = visible(s.jobs.get(job_id))
    if not record.get("results"):
        raise Conflict(f"job {job_id} has no results yet (status: {record['status']})")
    label, group = request.args.get("label", ""), request.args.get("group")
    limit = int_arg(request, "limit", 48, 1, 500)
    offset = int_arg(request, "offset", 0, 0, 10**9)
    summary = record.get("summary") or {}
    if group is not None and group not in summary.get("groups", {}) and "other_groups" in summary:
        # a group left out of the record's bounded summary: summary.json has them all
        summary = json.loads(s.store.get(layout.job_key(job_id, layout.SUMMARY)))
    total = _matching(summary, label, group)
    rows = [_card(job_id, record, index, row)
            for index, row in read_rows(s.store, job_id, offset, limit, label, group)]
    end = offset + len(rows)
    return jsonify({"job_id": job_id, "total": total, "offset": offset, "limit": limit,
                    "next_offset": end if end < total else None, "rows": rows})


def _matching(summary: dict, label: str, group: str | None) -> int:
    """How many rows a filter selects, from the summary's counts (no scan needed)."""
    tally = summary.get("overall", {}) if group is None else summary.get("groups", {}).get(group)
    if not tally:
        return 0
    if label == ERRORS:
        return tally["failed"]
    if label == NO_FACE:
        return tally.get("no_face", 0)
    if label:
        return tally["labels"].get(label, {}).get("count", 0)
    return rows_in(tally)


def _card(job_id: str, record: dict, index: int, row: dict) -> dict:
    # Named by row number: the thumbnail route reads the row to know the image, so a URL can
    # name nothing but an image of this job's results.
    thumb = f"/ui/api/jobs/{job_id}/thumbs/{index}" if thumbs().has_thumb(record, row) else None
    extra = {k: row[k] for k in ("face", "box") if k in row}  # a faces job's row: which face
    extra.update({k: row[k] for k in ("t", "frame") if row.get(k) is not None})  # a video's frame
    return {"index": index, "image": row["image"], "group": row["group"], "label": row["label"],
            "confidence": row["confidence"], "error": row.get("error"), "thumb": thumb, **extra}


@bp.get("/ui/api/jobs/<job_id>/thumbs/<int:index>")
def thumbnail(job_id: str, index: int):
    """The thumbnail JPEG of row `index` of a finished job's results, made on demand from the
    job's source; 404 for a row with none (failed, not in the sample, source gone)."""
    record = visible(services().jobs.get(job_id))  # unknown or not the caller's: 404 first
    if not record.get("results"):
        raise NotFound(f"job {job_id} has no results yet (status: {record['status']})")
    data = thumbs().get(job_id, record, index)
    # A finished job's rows never change: browsers may keep it.
    return Response(data, mimetype="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400"})


@bp.get("/ui/api/models/<version>/history")
def model_history(version: str):
    """A trained version's per-epoch history (history.json beside its manifest)."""
    s = services()
    manifest = s.registry.manifest(check_name(version))
    try:
        history = json.loads(s.store.get(layout.version_key(manifest["version"], layout.HISTORY)))
    except ObjectNotFound:
        raise NotFound(f"model version {version} has no training history (it was imported, "
                       "not trained here)") from None
    return jsonify({"version": manifest["version"], "history": history})


def openapi_paths() -> dict:
    """This blueprint's routes for /openapi.json (api/openapi/ merges them into its paths)."""
    from api.openapi.builders import obj, op, path_param, query_int

    job_id, version = path_param("job_id"), path_param("version")
    index = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer",
             "minimum": 0}, "description": "the row's `index` in the job's results"}
    nullable = {"type": ["string", "null"]}
    card = obj({"index": {"type": "integer"}, "image": {"type": "string"},
                "group": {"type": "string"}, "label": nullable,
                "confidence": {"type": ["number", "null"]}, "error": nullable, "thumb": nullable,
                "face": {"type": ["integer", "null"], "description": "a faces job's: the "
                         "face's number in its image (null: no face)"},
                "box": {"type": ["array", "null"], "items": {"type": "integer"}},
                "t": {"type": "number", "description": "a video frame's: seconds from the ad's "
                      "start"},
                "frame": {"type": "integer", "description": "a video frame's: its sample's "
                          "index in the video"}},
               ("index", "image", "group", "label", "confidence", "error", "thumb"))
    page = obj({"job_id": {"type": "string"}, "total": {"type": "integer"},
                "offset": {"type": "integer"}, "limit": {"type": "integer"},
                "next_offset": {"type": ["integer", "null"]},
                "rows": {"type": "array", "items": card}},
               ("job_id", "total", "offset", "limit", "next_offset", "rows"))
    # The two filters that are not classes, titled: the dashboard reads them from here.
    text = {"name": "label", "in": "query", "required": False, "schema": {"anyOf": [
                {"title": "errors", "const": ERRORS, "description": "the failed images"},
                {"title": "no_face", "const": NO_FACE, "description": "a faces job's images "
                 "without a face"},
                {"type": "string", "description": "a class; empty: all"}]},
            "description": f"a class, {ERRORS} for failed images or {NO_FACE} for a "
                           "faces job's images without a face; empty: all"}
    group = {"name": "group", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "one group (sub-folder); absent: all"}
    paths = {
        "/": {"get": op("The web dashboard (HTML)", 200, {"type": "string"}, open_=True)},
        "/ui/static/{filename}": {"get": op("The dashboard's scripts and styles", 200,
                                            {"type": "string"}, (404,),
                                            params=(path_param("filename"),), open_=True)},
        "/ui/api/jobs/{job_id}/gallery": {"get": op(
            "A page of a finished scoring job's images with thumbnail URLs, filtered", 200, page,
            (400, 404, 409, 503), params=(job_id, text, group,
                                          query_int("offset", 0, "matching rows to skip"),
                                          query_int("limit", 48, "clamped to 1..500")))},
        "/ui/api/jobs/{job_id}/thumbs/{index}": {"get": op(
            "One row's thumbnail (JPEG, 128 px), made on demand from the job's source and "
            "cached in memory; a URL-list job has one for a 1-in-16 sample of its images", 200,
            {"type": "string"}, (400, 404, 503), params=(job_id, index))},
        "/ui/api/models/{version}/history": {"get": op(
            "A trained version's per-epoch history", 200,
            obj({"version": {"type": "string"}, "history": {"type": "array",
                                                            "items": {"type": "object"}}},
                ("version", "history")), (400, 404, 503), params=(version,))},
    }
    # Not JSON: the page, the static files and the thumbnails say what they are.
    for path, media in (("/", "text/html"), ("/ui/static/{filename}", "*/*"),
                        ("/ui/api/jobs/{job_id}/thumbs/{index}", "image/jpeg")):
        ok = paths[path]["get"]["responses"]["200"]
        ok["content"] = {media: {"schema": {"type": "string"}}}
    return paths
