"""The control worker beside each scoring worker: started with it, stopped with it."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys

log = logging.getLogger(__name__)
THREADS = 16  # control steps mostly wait on the network (listings, webhooks): threads are cheap
_procs: list[subprocess.Popen] = []


def command(name: str) -> list[str]:
    """The control worker's command line."""
    return [sys.executable, "-m", "celery", "-A", "worker.control", "worker", "-Q", "control",
            "-P", "threads", "-c", str(THREADS), "-n", f"control-{name}-%h-{os.getpid()}",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the scoring worker dies, even by SIGKILL (Linux)."""
    # not Linux (no prctl): stop() still ends it on a clean shutdown
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start() -> subprocess.Popen:
    """Start this worker's control worker, with the same environment (the same settings)."""
    proc = subprocess.Popen(command(str(len(_procs))), env=os.environ.copy(),
                            preexec_fn=_die_with_parent)
    _procs.append(proc)
    log.info("control worker started beside this one (pid %d)", proc.pid)
    return proc


def stop(timeout: float = 30) -> None:
    """Stop the control worker (it finishes its running steps), then forget it."""
    while _procs:
        proc = _procs.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
