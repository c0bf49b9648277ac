"""The embedded API server (Werkzeug's, threaded): the errors it answers before the app sees a
request (a request line over 64 KiB: 414, a malformed one: 400, too many headers: 431) are JSON
too, like every answer of the app."""

from __future__ import annotations

import json
from http import HTTPStatus

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.serving import make_server as werkzeug_server


def error_body(status: int, message: str | None = None) -> bytes:
    """A server's own error as the app's JSON error body (code: the status's phrase)."""
    try:
        phrase, description = HTTPStatus(status).phrase, HTTPStatus(status).description
    except ValueError:
        phrase, description = "Error", ""
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    return json.dumps({"error": {"code": code, "message": message or description or phrase}}).encode()


class JsonErrors(WSGIRequestHandler):
    """Werkzeug's request handler, whose own error pages are JSON bodies instead of HTML."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """Answer {"error": {"code", "message"}} and close the connection (as http.server does)."""
        self.log_error("code %d, message %s", code, message)
        body = error_body(code, message or explain)
        self.send_response(code, message)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)
        self.close_connection = True


def make_server(host: str, port: int, app: Flask) -> BaseWSGIServer:
    """A threaded Werkzeug server for app whose own errors are JSON."""
    return werkzeug_server(host, port, app, threaded=True, request_handler=JsonErrors)
