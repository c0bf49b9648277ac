"""The OpenAPI builders every route's description uses: schema references and objects, JSON
content, operations with their error answers, path and query parameters."""

from __future__ import annotations

from api.auth import auth_enabled

ERROR_TEXT = {400: "Malformed request: bad JSON, unknown fields or wrong types (named)",
              401: "No API key, or an invalid one", 403: "The key may not do this",
              404: "Unknown job, model version or alias", 409: "Conflicts with the job's state",
              413: "Request body too large", 422: "Unusable source or model",
              503: "Redis or storage unavailable"}


def ref(name: str) -> dict:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict, required: tuple = (), closed: bool = False) -> dict:
    """A JSON object schema; closed ones refuse unknown fields (as the API does, with a 400)."""
    out = {"type": "object", "properties": props, "required": list(required)}
    if closed:
        out["additionalProperties"] = False
    return out


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
