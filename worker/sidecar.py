"""The control worker beside each scoring worker: started with it, restarted if it dies alone,
stopped with it (and killed with it, on Linux, even when the scoring worker is SIGKILLed)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

log = logging.getLogger(__name__)
THREADS = 16  # control steps mostly wait on the network (listings, webhooks): threads are cheap
BACKOFF_S = (1, 2, 4, 8, 16, 30)  # between restarts of a control worker that keeps dying
_procs: list[subprocess.Popen] = []
_stopping = threading.Event()


def command(name: str) -> list[str]:
    """The control worker's command line."""
    return [sys.executable, "-m", "celery", "-A", "worker.control", "worker", "-Q", "control",
            "-P", "threads", "-c", str(THREADS), "-n", f"control-{name}-%h-{os.getpid()}",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]


def _child_setup(parent: int):
    """What the child runs before exec: get SIGTERM when the scoring worker dies. prctl is
    looked up here, in the parent, since the child of a threaded process may only call it."""
    prctl = None
    with contextlib.suppress(OSError, AttributeError):  # not Linux: stop() still ends it
        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup():
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)

    return setup


def _spawn(name: str) -> subprocess.Popen:
    return subprocess.Popen(command(name), env=os.environ.copy(),
                            preexec_fn=_child_setup(os.getpid()))


def _watch(name: str) -> None:
    """Restart the control worker with backoff while it dies and this worker lives."""
    deaths = 0
    while not _stopping.is_set():
        proc = _procs[-1]
        code = proc.wait()
        if _stopping.is_set():
            return
        delay = BACKOFF_S[min(deaths, len(BACKOFF_S) - 1)]
        deaths += 1
        log.warning("control worker (pid %d) exited with %s; restarting it in %ss",
                    proc.pid, code, delay)
        if _stopping.wait(delay):
            return
        _procs.append(_spawn(name))


def start() -> subprocess.Popen:
    """Start this worker's control worker, with the same environment (the same settings)."""
    name = str(len(_procs))
    proc = _spawn(name)
    _procs.append(proc)
    threading.Thread(target=_watch, args=(name,), daemon=True, name="sidecar").start()
    log.info("control worker started beside this one (pid %d)", proc.pid)
    return proc


def stop(timeout: float = 30) -> None:
    """Stop the control worker (it finishes its running steps), then forget it."""
    _stopping.set()
    while _procs:
        proc = _procs.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
