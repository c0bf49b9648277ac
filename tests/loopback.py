"""A scripted HTTP server on loopback for the URL-source and webhook tests (stdlib, a thread)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Seen:
    """One request the server received."""

    at: float  # time.monotonic()
    method: str
    path: str
    headers: dict
    body: bytes


class Loopback:
    """GET routes answer with handler functions; POSTs answer with scripted statuses per path."""

    def __init__(self, host: str = "127.0.0.1"):
        self.routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.post_statuses: dict[str, list[int]] = defaultdict(list)  # then 200
        self.post_headers: dict[str, dict] = {}  # extra answer headers per path (a Location)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: pytest shows failures, not access logs
                pass

            def _record(self, body: bytes = b"") -> str:
                path = urlsplit(self.path).path
                with server.lock:
                    server.seen.append(Seen(time.monotonic(), self.command, self.path,
                                            dict(self.headers), body))
                return path

            def do_GET(self):
                route = server.routes.get(self._record())
                if route is None:
                    self.send_error(404)
                    return
                # The client may give up mid-answer (a time limit): that is the point of the test.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self._record(body)
                with server.lock:
                    script = server.post_statuses[path]
                    status = script.pop(0) if script else 200
                self.send_response(status)
                for name, value in server.post_headers.get(path, {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self.host = host
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Loopback:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of a path on this server (optionally naming another host, same port)."""
        return f"http://{host or self.host}:{self.port}{path}"

    def requests_to(self, path: str) -> list[Seen]:
        """The requests received for one path (query ignored)."""
        with self.lock:
            return [s for s in self.seen if urlsplit(s.path).path == path]


def respond(status: int, body: bytes = b"", headers: dict | None = None, *,
            length: bool = True) -> Callable:
    """A GET route answering status, body and headers (no Content-Length if length is False)."""
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return route


def redirect(location: str, status: int = 302) -> Callable:
    """A GET route redirecting to location."""
    return respond(status, headers={"Location": location})


def trickle(total_s: float, step_s: float = 0.1) -> Callable:
    """A GET route sending headers, then one byte per step for total_s seconds."""
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(int(total_s / step_s) + 1))
        handler.end_headers()
        deadline = time.monotonic() + total_s
        while time.monotonic() < deadline:
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(step_s)
    return route


def stall(seconds: float) -> Callable:
    """A GET route that says nothing for a while (no status line)."""
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        respond(200, b"late")(handler)
    return route
