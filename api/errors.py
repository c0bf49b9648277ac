"""Every error becomes JSON {"error": {"code", "message"}} with the right status; no tracebacks."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

import redis
from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from facesense import errors as fe
from facesense.state.records import finite

log = logging.getLogger(__name__)

# Most specific first: the first matching class picks the status.
STATUS = [
    (fe.BadRequest, 400), (fe.NotFound, 404), (fe.Conflict, 409), (fe.PayloadTooLarge, 413),
    (fe.SourceError, 422), (fe.ModelError, 422), (fe.TransientError, 503), (fe.ConfigError, 500),
]


# The dashboard's own files only; thumbnails arrive as blob: URLs; progress bars and heat cells
# set inline style attributes (style, not script: no inline script runs).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")


class StrictJSON(DefaultJSONProvider):
    """Every answer is JSON a browser parses: a non-finite float (in a record stored before
    they were refused) is null, never a bare NaN."""

    def dumps(self, obj, **kwargs) -> str:
        """obj as strict JSON text."""
        return super().dumps(finite(obj), **{**kwargs, "allow_nan": False})


def error_body(status: int, message: str | None = None) -> bytes:
    """A web server's own error (sent before the app sees the request: a 414...) as the app's
    JSON error body; its code is the status's phrase."""
    try:
        phrase, description = HTTPStatus(status).phrase, HTTPStatus(status).description
    except ValueError:
        phrase, description = "Error", ""
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    return json.dumps({"error": {"code": code, "message": message or description or phrase}}).encode()


def error_response(status: int, code: str, message: str):
    """A JSON error body with a status."""
    return jsonify({"error": {"code": code, "message": message}}), status


def too_large(app: Flask) -> tuple[str, str]:
    """What a 413 from Werkzeug means: it raises one bare error for a body over the limit, a
    multipart form with too many parts and a text field over its memory limit."""
    limit, length = app.config["MAX_CONTENT_LENGTH"], request.content_length
    if request.mimetype != "multipart/form-data" or (length is not None and length > limit):
        return "too_large", f"request body exceeds the {limit}-byte limit (FACESENSE_MAX_UPLOAD_BYTES)"
    body = "" if length is not None else f", or a body over {limit} bytes"
    return "too_many_parts", (
        f"the multipart upload has more than {app.config['MAX_FORM_PARTS']} parts (files and "
        f"fields; FACESENSE_MAX_FORM_PARTS), or a text field over "
        f"{app.config['MAX_FORM_MEMORY_SIZE']} bytes{body}: send many files as one .zip "
        "(`facesense submit --upload` does)")


def register(app: Flask) -> None:
    """Install the handlers."""

    @app.errorhandler(fe.FacesenseError)
    def facesense_error(e: fe.FacesenseError):
        status = next((s for cls, s in STATUS if isinstance(e, cls)), 500)
        return error_response(status, e.code, str(e))

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        code = (e.name or "error").lower().replace(" ", "_")
        message = e.description or e.name
        if e.code == 413:
            code, message = too_large(app)
        response, status = error_response(e.code or 500, code, message)
        for name, value in e.get_headers():  # e.g. Allow on a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.after_request
    def safe_headers(response):
        """Nothing sniffed or framed; the dashboard's page runs only its own scripts; an
        automatic OPTIONS answer is JSON like every other answer."""
        if request.method == "OPTIONS" and response.status_code == 200 and not response.is_json:
            allow = sorted(response.allow)
            response.set_data(json.dumps({"allow": allow}))
            response.mimetype = "application/json"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def redis_down(e: Exception):
        log.warning("Redis unavailable: %s", e)
        return error_response(503, "unavailable", "the job database (Redis) is unavailable; "
                              "retry shortly")

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal", "internal server error; see the server log")
