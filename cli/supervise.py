"""What `facesense up` watches: a child that dies is restarted after a backoff, or the stack stops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from facesense.errors import FacesenseError

log = logging.getLogger(__name__)

WINDOW_S = 60.0  # deaths older than this are forgiven
FIRST_BACKOFF_S = 0.5  # doubled for each recent death, so a crash loop does not spin
MAX_BACKOFF_S = 8.0


class StackFailed(FacesenseError):
    """A child of `facesense up` died more often than allowed: the whole stack was stopped."""


class Handle(Protocol):
    """A running child: a subprocess.Popen, or the API server's thread."""

    pid: int | None

    def poll(self) -> int | None: ...


def json_errors():
    """Werkzeug's request handler, whose own errors (sent before the app sees a request: a request
    line over 64 KiB is a 414, too many headers a 431) are JSON like every answer of the app."""
    from werkzeug.serving import WSGIRequestHandler

    from api.errors import error_body

    class JsonErrors(WSGIRequestHandler):
        def send_error(self, code: int, message: str | None = None, explain: str | None = None):
            """Answer {"error": {"code", "message"}} and close (as http.server's does)."""
            self.log_error("code %d, message %s", code, message)
            body = error_body(code, message or explain)
            self.send_response(code, message)
            for name, value in (("Connection", "close"), ("Content-Type", "application/json"),
                                ("Content-Length", str(len(body))),
                                ("X-Content-Type-Options", "nosniff")):
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
            self.close_connection = True

    return JsonErrors


class ApiThread:
    """The API's WSGI server, serving in a thread of the launcher."""

    pid = None

    def __init__(self, host: str, port: int, app):
        from werkzeug.serving import make_server

        self.server = make_server(host, port, app, threaded=True, request_handler=json_errors())
        self.thread = threading.Thread(target=self._serve, name="facesense-api", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.server.serve_forever()
        except Exception:
            log.exception("the API server stopped")
        finally:
            self.server.server_close()  # frees the port for a restart

    def poll(self) -> int | None:
        """None while serving, 1 once the server thread has ended."""
        return None if self.thread.is_alive() else 1

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self.thread.is_alive():
            self.server.shutdown()
        self.thread.join(10)


class FailedStart:
    """A restart that raised: it counts as one more death of the child."""

    pid = None

    def __init__(self, error: Exception):
        self.error = error

    def poll(self) -> int:
        return 1


class Child:
    """One watched child: how to start it, its current handle, its recent deaths."""

    def __init__(self, name: str, handle: Handle, start: Callable[[], Handle]):
        self.name, self.handle, self.start = name, handle, start
        self.deaths: list[float] = []
        self.restart_at: float | None = None


class Supervisor:
    """Restarts dead children with backoff; raises StackFailed when one dies more than
    max_restarts times within WINDOW_S (the caller then stops everything)."""

    def __init__(self, max_restarts: int, clock: Callable[[], float] = time.monotonic):
        self.max_restarts, self.clock = max_restarts, clock
        self.children: list[Child] = []

    def watch(self, name: str, handle: Handle, start: Callable[[], Handle]) -> None:
        """Watch a started child; start() makes a new one in its place."""
        self.children.append(Child(name, handle, start))

    def handles(self) -> list[Handle]:
        """The children's current handles (a dead one included), in the order watched."""
        return [c.handle for c in self.children]

    def check(self) -> None:
        """Note deaths, restart children whose backoff has passed; call it about twice a second."""
        for child in self.children:
            now = self.clock()
            if child.restart_at is None:
                code = child.handle.poll()
                if code is not None:
                    self._died(child, code, now)
            elif now >= child.restart_at:
                self._restart(child)

    def _died(self, child: Child, code: int, now: float) -> None:
        child.deaths = [t for t in child.deaths if now - t < WINDOW_S] + [now]
        error = getattr(child.handle, "error", None)
        how = f"its restart failed: {error}" if error else exit_reason(code)
        if len(child.deaths) > self.max_restarts:
            raise StackFailed(
                f"{child.name} (pid {child.handle.pid}) died ({how}), {len(child.deaths)} time(s) "
                f"within {WINDOW_S:.0f}s with FACESENSE_UP_MAX_RESTARTS={self.max_restarts}: "
                "stopping the whole stack")
        delay = min(FIRST_BACKOFF_S * 2 ** (len(child.deaths) - 1), MAX_BACKOFF_S)
        log.error("%s (pid %s) died (%s); restarting it in %.1fs (restart %d of %d allowed "
                  "within %.0fs)", child.name, child.handle.pid, how, delay, len(child.deaths),
                  self.max_restarts, WINDOW_S)
        child.restart_at = now + delay

    def _restart(self, child: Child) -> None:
        child.restart_at = None
        try:
            child.handle = child.start()
        except Exception as e:  # e.g. the port taken meanwhile: one more death, then backoff
            child.handle = FailedStart(e)
            return
        log.warning("%s restarted (pid %s)", child.name, child.handle.pid)


def exit_reason(code: int) -> str:
    """'killed by signal 9' or 'exit code 1'."""
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
