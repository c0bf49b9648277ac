"""The launcher's supervisor on real processes and a real server thread: restarts with backoff,
then gives up with a clear error instead of running half-dead."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

import pytest
import requests

from cli.launcher import free_port, stop
from cli.supervise import ApiThread, StackFailed, Supervisor


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


def run_until(supervisor: Supervisor, done, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the supervisor did not act in time"
        supervisor.check()
        time.sleep(0.05)


@pytest.fixture
def watched():
    """A supervisor allowing 2 restarts, watching one `sleep` process; all stopped after."""
    supervisor = Supervisor(max_restarts=2)
    supervisor.watch("sleeper", sleeper(), sleeper)
    yield supervisor
    stop([h for h in supervisor.handles() if isinstance(h, subprocess.Popen)], timeout=2)


def test_a_killed_child_is_restarted_after_a_backoff_and_logged(watched, caplog):
    caplog.set_level(logging.INFO, "cli.supervise")
    first = watched.handles()[0]
    os.kill(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    run_until(watched, lambda: watched.handles()[0] is not first)
    assert time.monotonic() - killed >= 0.5  # the first backoff
    assert watched.handles()[0].poll() is None
    text = caplog.text
    assert f"sleeper (pid {first.pid}) died (killed by signal 9); restarting it in 0.5s" in text
    assert f"sleeper restarted (pid {watched.handles()[0].pid})" in text


def test_the_backoff_doubles_then_one_death_too_many_stops_with_a_clear_error(watched):
    pids, waits = [], []
    for _ in range(2):
        current = watched.handles()[0]
        pids.append(current.pid)
        os.kill(current.pid, signal.SIGKILL)
        killed = time.monotonic()
        run_until(watched, lambda c=current: watched.handles()[0] is not c)
        waits.append(time.monotonic() - killed)
    assert 0.5 <= waits[0] < 1.0 <= waits[1] < 2.0
    os.kill(watched.handles()[0].pid, signal.SIGKILL)
    watched.handles()[0].wait()
    with pytest.raises(StackFailed, match=r"sleeper \(pid \d+\) died \(killed by signal 9\), "
                                          r"3 time\(s\) within 60s .* stopping the whole stack"):
        watched.check()


def test_a_restart_that_fails_counts_as_a_death():
    attempts = []

    def broken():
        attempts.append(1)
        raise OSError("address already in use")

    supervisor = Supervisor(max_restarts=1)
    proc = subprocess.Popen(["true"])
    proc.wait()
    supervisor.watch("redis-server", proc, broken)
    supervisor.check()  # death 1: a restart in 0.5 s
    time.sleep(0.6)
    supervisor.check()  # the restart raises
    with pytest.raises(StackFailed, match="its restart failed: address already in use"):
        supervisor.check()
    assert len(attempts) == 1


def test_zero_restarts_stops_at_the_first_death():
    supervisor = Supervisor(max_restarts=0)
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    proc.wait()
    supervisor.watch("worker 0", proc, sleeper)
    with pytest.raises(StackFailed, match=r"worker 0 .* died \(exit code 3\)"):
        supervisor.check()


def test_an_api_server_thread_that_ends_is_served_again_on_its_port():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    port = free_port()
    supervisor = Supervisor(max_restarts=1)
    api = ApiThread("127.0.0.1", port, app)
    supervisor.watch("API server", api, lambda: ApiThread("127.0.0.1", port, app))
    try:
        api.server.shutdown()  # serve_forever returns: the thread ends
        api.thread.join(5)
        run_until(supervisor, lambda: supervisor.handles()[0] is not api)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        supervisor.handles()[0].stop()
