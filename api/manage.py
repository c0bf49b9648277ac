"""Housekeeping routes: delete a job or a model version, and the filtered job list's query."""

from __future__ import annotations

from flask import Blueprint, Request, jsonify

from api.auth import caller, require_admin, visible
from api.schemas import int_arg
from api.services import services
from facesense.errors import BadRequest, Conflict
from facesense.state.joblist import JobQuery, find, parse_time
from facesense.state.purge import Purger, jobs_naming
from facesense.state.records import public_record

bp = Blueprint("manage", __name__)
FILTERS = ("name", "tag", "status", "since", "until", "cursor")


@bp.delete("/v1/jobs/<job_id>")
def delete_job(job_id: str):
    """Delete a finished job (409 while it is queued or running: cancel it first): its
    results, thumbnails, uploads and record, its Redis keys and its index entries."""
    s = services()
    record = visible(s.jobs.get(job_id))  # another key's job: the same 404 as an unknown id
    settle = 2 * s.settings.lease_ttl_s  # a cancelled job's workers stop within a lease
    return jsonify(Purger(s.jobs, settle_s=settle).delete(record))


@bp.delete("/v1/models/<version>")
def delete_model(version: str):
    """Delete a model version (an admin key: every key scores with the shared versions); 409
    while an alias points at it or a queued or running job names it."""
    require_admin("deleting a model version")
    s = services()
    s.registry.manifest(version)  # 404 for an unknown version, before anything else
    s.registry.check_unaliased(version)
    users = jobs_naming(s.jobs, version)
    if users:
        raise Conflict(f"model version {version!r} is named by {len(users)} queued or running "
                       f"job(s) ({', '.join(users[:5])}): delete it once they end")
    return jsonify({"version": version, "deleted": True,
                    "objects": s.registry.delete(version)})


def list_page(request: Request) -> dict:
    """GET /v1/jobs: newest first, the caller's own (every job for an admin key), filtered by
    name prefix, tag, status and creation time, paged back in time by next_cursor."""
    limit = int_arg(request, "limit", 20, 1, 200)
    offset = int_arg(request, "offset", 0, 0, 1_000_000)
    who = caller()
    owner = None if who.admin else who.name
    args = request.args
    if offset:  # the older way to page: kept for callers that use it, unfiltered only
        if any(args.get(k) for k in FILTERS):
            raise BadRequest("offset pages only the unfiltered list: page with cursor")
        records = services().jobs.recent(limit, offset, owner=owner)
        return {"jobs": [public_record(r) for r in records], "limit": limit, "offset": offset,
                "next_cursor": None}
    statuses = tuple(s for s in args.get("status", "").split(",") if s)
    query = JobQuery(owner=owner, name=args.get("name", ""), tag=args.get("tag", ""),
                     statuses=statuses, limit=limit, cursor=args.get("cursor") or None,
                     since=parse_time(args["since"], "since") if args.get("since") else None,
                     until=parse_time(args["until"], "until") if args.get("until") else None)
    records, cursor = find(services().jobs.redis, query.check())
    return {"jobs": [public_record(r) for r in records], "limit": limit, "offset": 0,
            "next_cursor": cursor}


def openapi_paths() -> dict:
    """These routes in the OpenAPI document (the list's GET replaces the plain one)."""
    from api.auth import auth_enabled
    from api.openapi.builders import op, path_param, query_int, ref

    auth = (403,) if auth_enabled() else ()
    text = [("name", "a prefix of the job's name, any case"), ("tag", "one of its tags"),
            ("status", "queued, running, succeeded, failed or cancelled; several comma-separated"),
            ("since", "created at or after: unix seconds or ISO 8601 (2026-12-01, "
                      "2026-12-01T09:30:00Z)"), ("until", "created before; as since"),
            ("cursor", "a page's next_cursor: the next, older page")]
    filters = tuple({"name": n, "in": "query", "required": False, "description": d,
                     "schema": {"type": "string"}} for n, d in text)
    deleted = {"type": "object", "required": ["deleted"], "properties": {
        "id": {"type": "string"}, "version": {"type": "string"}, "deleted": {"type": "boolean"},
        "objects": {"type": "integer"}, "keys": {"type": "integer"}}}
    return {
        "/v1/jobs": {"get": op(
            "Recent jobs, newest first (the caller's own; every job for an admin key), filtered "
            "by name, tag, status and date; page back with cursor", 200, ref("JobList"),
            (400, 503), params=(query_int("limit", 20, "clamped to 1..200"),
                                query_int("offset", 0, "jobs to skip (unfiltered lists only)"),
                                *filters))},
        "/v1/jobs/{job_id}": {"delete": op(
            "Delete a finished job: results, thumbnails, uploads, record and Redis keys (409 "
            "while queued or running: cancel it first)", 200, deleted, (404, 409, 503),
            params=(path_param("job_id"),))},
        "/v1/models/{version}": {"delete": op(
            "Delete a model version (admin keys only when keys are configured; 409 while an "
            "alias or a queued or running job names it)", 200, deleted, (404, 409, 503, *auth),
            params=(path_param("version"),))},
    }
