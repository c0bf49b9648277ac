"""gunicorn's settings for the API (`gunicorn -c python:api.gunicorn_conf 'api:create_app()'`):
the errors gunicorn answers itself, before the app sees a request (a request line over
limit_request_line, too many or too long headers, a malformed request), are JSON like every
answer of the app, not gunicorn's HTML page."""

from __future__ import annotations

import socket
import sys

from gunicorn import util

from api.errors import error_body
from facesense.errors import ConfigError
from facesense.keys import check_exposure
from facesense.settings import Settings

limit_request_line = 8190  # gunicorn's largest: a long query still reaches the app's own 4xx


def write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's util.write_error, answering {"error": {"code", "message"}} instead of HTML."""
    body = error_body(status_int, mesg or reason)  # the embedded server's codes, too
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1", "replace") + body)


# Workers call util.write_error by attribute at the moment of the error, so the swap made here,
# in the master while it reads this file, holds in every worker it forks.
util.write_error = write_error


def on_starting(server) -> None:
    """Check the settings in the master, before any worker boots: a bad one (or an open API on
    a public address) is one line and exit code 2, as from the CLI. Left to the workers, each
    would print a traceback and gunicorn would exit 3."""
    try:
        check_exposure(Settings.from_env())
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
