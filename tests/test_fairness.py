"""The fair scheduler with real workers: a small job does not wait behind a big one, high
priority goes first, a key's quota holds its next job, tokens come back after a kill, and a
webhook receiver that never answers slows no other job.

On the private stack (tests.stack): 64 px model, 50-image shards, 2 s leases.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from api import create_app
from facesense.keys import hash_key, new_key
from tests.stack import assert_each_image_once, tiny_folder, wait_until

pytestmark = pytest.mark.slow


def shards_done(stack, *job_ids: str) -> int:
    return sum(stack.job(j)["progress"]["shards_done"] for j in job_ids)


def cancel(stack, job_id: str) -> None:
    """Cancel a job and wait until its partial results are merged (nothing left running)."""
    assert stack.api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    wait_until(lambda: stack.job(job_id).get("partial"), 60, "the cancelled job's partial results")


def one_worker(stack):
    """Exactly one live scoring worker on the stack."""
    *others, worker = stack.ensure_workers(1)
    if others:
        from cli.launcher import stop

        stop(others)
    return worker


def test_a_small_job_waits_about_one_shard_behind_a_big_one(stack):
    # Given one worker busy with a 30-shard job
    tiny_folder(stack.root / "fair-big", 1500)
    small_keys = tiny_folder(stack.root / "fair-small", 40)
    one_worker(stack)
    big = stack.submit(stack.root / "fair-big")
    wait_until(lambda: shards_done(stack, big) >= 2, 60, "the big job to be under way")
    # When a one-shard job arrives
    before = shards_done(stack, big)
    small = stack.submit(stack.root / "fair-small")
    record = stack.wait(small, 60)
    # Then it ran after the shard in flight (and at most one more that started meanwhile),
    # not behind the 28 still waiting
    assert record["status"] == "succeeded"
    assert shards_done(stack, big) - before <= 2
    assert stack.job(big)["status"] == "running"
    assert_each_image_once(stack.rows(small), small_keys)
    cancel(stack, big)  # its own run is the other tests' business


def test_a_high_priority_job_starts_before_queued_normal_shards(stack):
    # Given two normal jobs sharing one worker, both under way
    for name in ("prio-a", "prio-b"):
        tiny_folder(stack.root / name, 600)
    tiny_folder(stack.root / "prio-high", 100)
    one_worker(stack)
    normal = [stack.submit(stack.root / n) for n in ("prio-a", "prio-b")]
    wait_until(lambda: all(stack.job(j)["progress"]["shards_done"] for j in normal), 60,
               "both normal jobs to run")
    # When a high-priority job of two shards arrives
    before = shards_done(stack, *normal)
    high = stack.submit(stack.root / "prio-high", priority="high")
    assert stack.wait(high, 60)["status"] == "succeeded"
    # Then both its shards ran before the normal jobs' queued ones (one was in flight)
    assert shards_done(stack, *normal) - before <= 2
    assert all(stack.job(j)["status"] == "running" for j in normal)
    for job_id in normal:
        cancel(stack, job_id)


def test_a_keys_running_jobs_quota_holds_its_next_job_and_says_so(stack):
    # Given a key allowed one job scoring at a time
    key = new_key()
    api = create_app(stack.settings.replace(api_keys=f"quota:{hash_key(key)}",
                                            key_max_running_jobs=1)).test_client()
    auth = {"Authorization": f"Bearer {key}"}
    tiny_folder(stack.root / "quota-a", 500)
    tiny_folder(stack.root / "quota-b", 50)
    one_worker(stack)

    def submit(folder):
        resp = api.post("/v1/jobs", json={"type": "classify", "source": str(folder)}, headers=auth)
        assert resp.status_code == 202, resp.get_json()
        return resp.get_json()["id"]

    def job(job_id):
        return api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()

    first = submit(stack.root / "quota-a")
    wait_until(lambda: job(first)["status"] == "running", 60, "the first job to run")
    second = submit(stack.root / "quota-b")
    # When the second is looked at while the first runs, it is held, and says why
    held = wait_until(lambda: (r := job(second)).get("queue", {}).get("held") and r, 30,
                      "the second job to be held")
    assert "FACESENSE_KEY_MAX_RUNNING_JOBS" in held["queue"]["held"]
    assert held["status"] == "queued" and held["progress"]["shards_done"] == 0
    assert job(first)["status"] == "running"
    # Then it starts only once the first has ended, and finishes
    done = wait_until(lambda: (r := job(second))["status"] == "succeeded" and r, 120,
                      "the second job to finish")
    assert done["started_at"] >= job(first)["finished_at"]


def test_sigkill_while_two_jobs_share_the_workers(stack):
    # Given two jobs sharing two workers, one of them a solo process to kill
    keys = {n: tiny_folder(stack.root / n, 1000) for n in ("share-a", "share-b")}
    (victim,) = stack.start_workers(1)
    stack.ensure_workers(2)
    ids = {n: stack.submit(stack.root / n) for n in keys}
    index = wait_until(lambda: shards_done(stack, *ids.values()) >= 4 and any(
        stack.shard_held_by(j, victim) is not None for j in ids.values()), 120,
        "the victim to hold a shard")
    assert index
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # Then both finish with every image exactly once: the shard it held came back through
    # the watchdog, and tokens kept flowing without its unacked one (redelivered only after
    # the broker's visibility timeout, an hour)
    for name, job_id in ids.items():
        record = stack.wait(job_id, 180)
        assert record["status"] == "succeeded", record
        assert_each_image_once(stack.rows(job_id), keys[name])
    assert any(n == 2 for j in ids.values() for n in stack.attempts(j).values())


class BlackHole:
    """A TCP server that accepts connections and never answers (a hung webhook receiver)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_webhook_receiver_that_never_answers_slows_no_other_job(stack):
    # Given jobs whose webhooks go to a receiver that accepts and never answers (each attempt
    # hangs for FACESENSE_URL_TIMEOUT_S, 30 s here)
    hole = BlackHole()
    tiny_folder(stack.root / "hook", 50)
    tiny_folder(stack.root / "plain", 100)
    one_worker(stack)
    try:
        hooked = [stack.api.post("/v1/jobs", json={"type": "classify", "source": str(stack.root / "hook"),
                                             "callback_url": f"http://127.0.0.1:{hole.port}/h"}
                           ).get_json()["id"] for _ in range(3)]
        wait_until(lambda: len(hole.accepted) >= 3, 60, "three deliveries to hang")
        # When other jobs run while those deliveries hang
        started = time.monotonic()
        others = [stack.submit(stack.root / "plain") for _ in range(3)]
        records = [stack.wait(j, 25) for j in others]
        took = time.monotonic() - started
        # Then they finish well inside one delivery's timeout: no plan, shard or finaliser
        # waited behind a webhook
        assert [r["status"] for r in records] == ["succeeded"] * 3
        assert took < stack.settings.url_timeout_s, took
        assert all(stack.job(j)["status"] == "succeeded" for j in hooked)
    finally:
        hole.close()


def test_a_control_worker_that_dies_alone_is_restarted(stack):
    from tests.stack import children

    # Given one scoring worker and the control worker beside it
    worker = one_worker(stack)
    control = wait_until(lambda: children(worker.pid), 30, "the control worker")[0]
    tiny_folder(stack.root / "control-restart", 60)
    # When the control worker alone is killed
    os.kill(int(control), signal.SIGKILL)
    # Then another takes its place, and jobs are planned and finalised again
    wait_until(lambda: children(worker.pid) and children(worker.pid) != [control], 60,
               "a new control worker")
    job_id = stack.submit(stack.root / "control-restart")
    assert stack.wait(job_id, 90)["status"] == "succeeded"
    assert worker.poll() is None


def test_a_job_waiting_behind_training_on_a_shared_worker_says_so(stack):
    # Given the stack's only worker serving both queues, busy with a long training run
    import torch

    from cli.launcher import start_workers, stop
    from facesense.registry import Registry
    from facesense.storage import store_from_settings
    from facesense.synthetic import make_dataset
    from runtime.architectures import GREY_64
    from runtime.network import build, register_state
    from tests.conftest import wait_for_workers
    from tests.stack import ONE_THREAD

    stop(stack.workers)
    stack.workers = start_workers(stack.settings, 1, env=ONE_THREAD, queues="inference,training")
    wait_for_workers(stack.settings, stack.workers)
    make_dataset(stack.root / "shared-faces", per_class=16, seed=2)  # 6 held out: beats chance
    # fine-tuning the small mini_xception: the wait is under test, not AlexNet's epochs (its
    # 1000 outlast the test, which cancels the run)
    torch.manual_seed(2)
    base = register_state(Registry(store_from_settings(stack.settings)),
                          build("mini_xception", 2).state_dict(), ["happy", "sad"],
                          arch="mini_xception", preprocess=GREY_64)["version"]
    resp = stack.api.post("/v1/jobs", json={"type": "train", "dataset": str(stack.root / "shared-faces"),
                                            "params": {"epochs": 1000, "image_size": 64,
                                                       "batch_size": 8, "patience": 0,
                                                       "min_steps": 0, "base": base}})
    assert resp.status_code == 202, resp.get_json()
    training = resp.get_json()["id"]
    try:  # whatever happens, the run is cancelled and the worker stopped: the next tests share
        # this stack and start their own (poisonable) workers
        deadline = time.monotonic() + 300
        while (stack.job(training).get("epoch") or 0) < 1:  # a failed run fails here, with why
            record = stack.job(training)
            assert record["status"] in ("queued", "running"), record
            assert time.monotonic() < deadline, f"no first epoch in 300 s: {record}"
            time.sleep(0.2)
        # When a scoring job arrives, then while it waits it says what it waits for
        tiny_folder(stack.root / "behind-training", 20)
        scoring = stack.submit(stack.root / "behind-training")
        queue = wait_until(lambda: stack.job(scoring).get("queue"), 30, "the job's standing")
        assert queue["training_ahead"] == 1 and "training" in queue["held"], queue
        assert queue["jobs_ahead"] == 0 and stack.job(scoring)["status"] == "queued"
        # and it runs once the training has ended
        assert stack.api.post(f"/v1/jobs/{training}/cancel").status_code == 200
        assert stack.wait(scoring, 120)["status"] == "succeeded"
    finally:
        stack.api.post(f"/v1/jobs/{training}/cancel")
        stop(stack.workers)
        stack.workers = []
