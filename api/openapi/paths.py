"""The OpenAPI paths of the job and model routes."""

from __future__ import annotations

from api.auth import auth_enabled
from api.openapi.builders import json_content, obj, op, path_param, query_int, ref
from api.openapi.schemas import PRIORITY


def job_paths() -> dict:
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


def model_paths() -> dict:
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

