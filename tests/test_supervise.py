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
    killed_at = time.monotonic()
    run_until(watched, lambda: watched.handles()[0] is not first)
    assert time.monotonic() - killed_at >= 0.5  # the first backoff (a lower bound: no load breaks it)
    assert watched.handles()[0].poll() is None
    text = caplog.text
    assert f"sleeper (pid {first.pid}) died (killed by signal 9); restarting it in 0.5s" in text
    assert f"sleeper restarted (pid {watched.handles()[0].pid})" in text


class Clock:
    """A clock the test moves by hand: backoff windows checked exactly, whatever the load."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def killed(supervisor: Supervisor, clock: Clock) -> float:
    """SIGKILL the watched child, let the supervisor note its death; returns the time of it."""
    child = supervisor.handles()[0]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    supervisor.check()
    return clock.now


def test_the_backoff_doubles_then_one_death_too_many_stops_with_a_clear_error():
    clock = Clock()
    supervisor = Supervisor(max_restarts=2, clock=clock)
    supervisor.watch("sleeper", sleeper(), sleeper)
    try:
        for backoff in (0.5, 1.0):
            dead = supervisor.handles()[0]
            died = killed(supervisor, clock)
            clock.now = died + backoff - 0.01
            supervisor.check()
            assert supervisor.handles()[0] is dead  # still waiting out its backoff
            clock.now = died + backoff
            supervisor.check()
            assert supervisor.handles()[0] is not dead and supervisor.handles()[0].poll() is None
            clock.now += 1
        with pytest.raises(StackFailed, match=r"sleeper \(pid \d+\) died \(killed by signal 9\), "
                                              r"3 time\(s\) within 60s .* stopping the whole stack"):
            killed(supervisor, clock)  # a third death within the window: one too many
    finally:
        stop([h for h in supervisor.handles() if isinstance(h, subprocess.Popen)], timeout=2)


def test_a_restart_that_fails_counts_as_a_death():
    attempts = []

    def broken():
        attempts.append(1)
        raise OSError("address already in use")

    clock = Clock()
    supervisor = Supervisor(max_restarts=1, clock=clock)
    proc = subprocess.Popen(["true"])
    proc.wait()
    supervisor.watch("redis-server", proc, broken)
    supervisor.check()  # death 1: a restart in 0.5 s
    clock.now += 0.5
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
