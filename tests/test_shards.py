"""The plain job functions: at-least-once delivery gives exactly-once results."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from facesense.inputs.sources import normalize_source
from facesense.outputs.results import read_page
from facesense.queue import CLASSIFY_SHARD, FINALIZE_CLASSIFY
from facesense.state import leases, redis_keys
from facesense.state.status import JobStatus
from facesense.storage import layout, store_from_settings
from tests.conftest import private_context, wait_for_job
from tests.imagegen import make_folder
from worker import classify, runner, steps
from worker.steps import plan as planning


@pytest.fixture
def sent() -> list[tuple[str, list]]:
    """The tasks the job functions queued, as (name, args)."""
    return []


@pytest.fixture
def ctx(settings, model_version, sent):
    """A worker context on Redis database 3, queueing into `sent`."""
    return private_context(settings, 3, sent)


TOKEN = (CLASSIFY_SHARD, [])  # a shard token: the scheduler picks the shard when it is taken


# The steps as a worker runs them: through the runner (lease, after_step), without Celery.
def plan(ctx, job_id: str) -> int:
    return runner.perform(ctx, steps.of("classify", "plan"), job_id)


def run_shard(ctx, job_id: str, index: int) -> bool | None:
    return runner.perform(ctx, steps.of("classify", "shard"), job_id, index)


def finalize(ctx, job_id: str) -> dict | None:
    return runner.perform(ctx, steps.of("classify", "finalize"), job_id)


def run_next(ctx) -> tuple[str, int] | None:
    """A token's turn and the shard it picked, run: that shard (None: nothing to run)."""
    picked = runner.take_turn(ctx)
    if picked is not None:
        run_shard(ctx, *picked)
    return picked


def fail_job(ctx, job_id: str, reason: str) -> None:
    runner.lifecycle(ctx).fail(job_id, reason)


def job_on_folder(ctx, base_dir, model_version, name: str, n: int) -> str:
    """A job on a fresh folder of n small generated images."""
    folder = base_dir / name
    make_folder(folder, n, max_side=200, corrupt=False)
    return new_job(ctx, folder, model_version)


def new_job(ctx, folder, model_version) -> str:
    record = ctx.jobs.create("classify", source=normalize_source(str(folder), ctx.settings),
                             model="production", model_version=model_version["version"],
                             classes=model_version["classes"])
    return record["id"]


def test_a_shard_delivered_twice_gives_no_duplicate_rows(ctx, sent, base_dir, model_version,
                                                          unique):
    # Given a 25-image job planned into 3 shards of at most 10
    folder = base_dir / f"dup-{unique}"
    make_folder(folder, 25, max_side=300, corrupt=False)
    job_id = new_job(ctx, folder, model_version)
    assert plan(ctx, job_id) == 3
    assert sent == [TOKEN] * 3

    # When shard 0 is delivered twice (a worker died before its ack) and the others once
    assert [run_shard(ctx, job_id, i) for i in (0, 0, 1, 2)] == [True, False, True,
                                                                          True]
    finals = [a for n, a in sent if n == FINALIZE_CLASSIFY]
    assert finals == [[job_id]]
    finalize(ctx, job_id)

    # Then every image appears exactly once and the counters were not doubled
    record = ctx.jobs.get(job_id)
    assert record["status"] == JobStatus.SUCCEEDED.value
    assert (record["total"], record["done"], record["shards_done"]) == (25, 25, 3)
    rows = read_page(ctx.store, job_id, 0, 1000)
    assert len(rows) == 25 and len({r["image"] for r in rows}) == 25
    assert record["summary"]["overall"]["images"] == 25


def test_a_second_delivery_before_the_first_is_counted_adds_no_rows(ctx, sent, base_dir,
                                                                   model_version, unique,
                                                                   monkeypatch):
    # Given a 25-image job in 3 shards, and a first delivery of shard 0 paused after it wrote
    # its rows but before they were counted
    job_id = job_on_folder(ctx, base_dir, model_version, f"overlap-{unique}", 25)
    plan(ctx, job_id)
    count, wrote, resume = ctx.shards.count, threading.Event(), threading.Event()

    def count_after_the_pause(*args):
        if not wrote.is_set():
            wrote.set()
            assert resume.wait(60)
        return count(*args)

    monkeypatch.setattr(ctx.shards, "count", count_after_the_pause)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_shard, ctx, job_id, 0)
        assert wrote.wait(120)
        # When a second delivery arrives while the first still holds its lease, it is skipped
        assert run_shard(ctx, job_id, 0) is None
        # and when one arrives after the first's lease lapsed (it stalled), it scores the shard
        ctx.leases.redis.delete(redis_keys.lease(job_id, leases.shard(0)))
        assert run_shard(ctx, job_id, 0) is True
        assert ctx.jobs.get(job_id)["shards_done"] == 1
        # and then the first one resumes: its rows land on the same key, counted nothing
        resume.set()
        assert first.result(60) is True
    assert [run_shard(ctx, job_id, i) for i in (1, 2)] == [True, True]
    finalize(ctx, job_id)
    # Then every image appears once and the counters hold each image once
    record = ctx.jobs.get(job_id)
    assert (record["status"], record["done"], record["shards_done"]) == ("succeeded", 25, 3)
    rows = read_page(ctx.store, job_id, 0, 1000)
    assert len(rows) == 25 and len({r["image"] for r in rows}) == 25
    assert [a for n, a in sent if n == FINALIZE_CLASSIFY] == [[job_id]]


def test_a_worker_opens_a_jobs_source_once_for_all_its_shards(ctx, base_dir, model_version,
                                                              unique, monkeypatch):
    import worker.context

    opened = []
    real = worker.context.open_source
    monkeypatch.setattr(worker.context, "open_source",
                        lambda url, *a: opened.append(url) or real(url, *a))
    job_id = job_on_folder(ctx, base_dir, model_version, f"once-{unique}", 25)
    plan(ctx, job_id)
    assert all(run_shard(ctx, job_id, i) for i in range(3))
    assert opened == [ctx.jobs.get(job_id)["source"]]  # the plan's listing and 3 shards: one open
    s3 = "s3://some-bucket/campaign"
    assert ctx.sources.get(s3).client is ctx.sources.get(s3).client  # one boto3 client


def test_planning_streams_shards_start_while_the_listing_goes_on(ctx, sent, base_dir,
                                                                model_version, unique,
                                                                monkeypatch):
    # Given a job of 45 images (5 shards of 10) planned 2 shards at a time (the listing read
    # 4 items ahead, where a real one reads 64: this job would fit in one look)
    from facesense.inputs.video import plan as video_plan

    monkeypatch.setattr(planning, "PLAN_BATCH", 2)
    monkeypatch.setattr(video_plan, "AHEAD", 4)
    job_id = job_on_folder(ctx, base_dir, model_version, f"stream-{unique}", 45)
    queued_when_listed: list[int] = []
    real = planning.listed

    def slow_listing(source):
        for item in real(source):
            queued_when_listed.append(len(sent))
            yield item

    monkeypatch.setattr(planning, "listed", slow_listing)
    # When it is planned
    assert plan(ctx, job_id) == 5
    # Then tokens for the first shards were sent before the last images were even listed
    assert queued_when_listed[0] == 0 and queued_when_listed[-1] >= 2
    assert sent and all(s == TOKEN for s in sent)
    # and the scheduler hands out the shards in order
    assert [runner.take_turn(ctx) for _ in range(6)] == [(job_id, i) for i in range(5)] + [None]
    record = ctx.jobs.get(job_id)
    assert (record["total"], record["shards"], record["planned"]) == (45, 5, 5)


def test_the_last_shard_counted_before_planning_ends_still_finalizes(ctx, sent, base_dir,
                                                                    model_version, unique,
                                                                    monkeypatch):
    # Given a worker so quick that it scores the only shard as soon as it is queued, before
    # the plan has set how many shards there are
    job_id = job_on_folder(ctx, base_dir, model_version, f"race-{unique}", 5)
    queue, ran = ctx.enqueue, []

    def eager(name, args):
        queue(name, args)
        if name == CLASSIFY_SHARD and not ran:
            assert not ctx.jobs.get_field(job_id, "shards")  # 0: still planning
            ran.append(run_next(ctx))

    monkeypatch.setattr(ctx, "enqueue", eager)
    plan(ctx, job_id)
    # Then the plan queued the finaliser itself, and the job finishes
    assert ran == [(job_id, 0)]
    assert [a for n, a in sent if n == FINALIZE_CLASSIFY] == [[job_id]]
    finalize(ctx, job_id)
    assert ctx.jobs.get(job_id)["status"] == "succeeded"


def test_a_plan_redelivered_after_every_shard_was_counted_queues_the_finaliser(
        ctx, sent, base_dir, model_version, unique):
    job_id = job_on_folder(ctx, base_dir, model_version, f"refinal-{unique}", 15)
    plan(ctx, job_id)
    assert [run_next(ctx) for _ in range(2)] == [(job_id, 0), (job_id, 1)]
    sent.clear()  # the finaliser's message was lost with the planner that queued it
    assert plan(ctx, job_id) == 0
    assert sent == [(FINALIZE_CLASSIFY, [job_id])]


def test_a_redelivered_plan_leaves_its_shards_to_the_scheduler(ctx, sent, base_dir,
                                                               model_version, unique):
    job_id = job_on_folder(ctx, base_dir, model_version, f"replan-{unique}", 25)
    plan(ctx, job_id)
    assert run_next(ctx) == (job_id, 0)
    sent.clear()  # the tokens were lost
    assert plan(ctx, job_id) == 2  # shards 1 and 2 are still to do
    assert sent and all(s == TOKEN for s in sent)  # tokens again, no second listing, no shard queued twice
    assert [run_next(ctx) for _ in range(3)] == [(job_id, 1), (job_id, 2), None]
    assert ctx.jobs.get(job_id)["shards_done"] == 3


def test_a_finished_job_ignores_late_shards(ctx, base_dir, model_version, unique):
    job_id = job_on_folder(ctx, base_dir, model_version, f"late-{unique}", 5)
    plan(ctx, job_id)
    run_shard(ctx, job_id, 0)
    finalize(ctx, job_id)
    assert run_shard(ctx, job_id, 0) is False
    assert finalize(ctx, job_id) is None
    assert ctx.jobs.get(job_id)["done"] == 5


def test_an_empty_source_fails_the_job_with_a_reason(client, worker, settings, base_dir, unique):
    # Given a folder with no images in it
    folder = base_dir / f"empty-{unique}"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    # When it is submitted and a real worker plans it
    job = client.post("/v1/jobs", json={"type": "classify", "source": str(folder)}).get_json()
    record = wait_for_job(client, job["id"])
    # Then the job failed, saying why, and its final record is archived
    assert record["status"] == "failed" and "no images found" in record["error"], record
    archived = json.loads(store_from_settings(settings).get(layout.job_record(job["id"])))
    assert archived["status"] == "failed" and archived["error"] == record["error"]


def test_a_shard_that_kills_its_workers_fails_only_the_images_they_died_on(ctx, base_dir,
                                                                          model_version, unique):
    # Given a shard whose deliveries never finished (each worker died mid-shard)
    job_id = job_on_folder(ctx, base_dir, model_version, f"poison-{unique}", 12)
    plan(ctx, job_id)  # shards: 0 (10 images), 1 (2 images)
    for _ in range(ctx.settings.shard_max_attempts):
        ctx.shards.count_attempt(job_id, 0)
    # and then two deliveries scoring its images alone, which died on images 3 and 7
    ctx.shards.count_attempt(job_id, 0)
    ctx.shards.note_in_flight(job_id, 0, 3)
    assert ctx.shards.convict_in_flight(job_id, 0) == {3}
    ctx.shards.count_attempt(job_id, 0)
    ctx.shards.note_in_flight(job_id, 0, 7)
    # When it is delivered once more, only those two images fail; the other eight are scored
    assert run_shard(ctx, job_id, 0) and run_shard(ctx, job_id, 1)
    finalize(ctx, job_id)
    record = ctx.jobs.get(job_id)
    assert record["status"] == "succeeded"
    assert (record["total"], record["done"], record["failed"]) == (12, 12, 2)
    rows = read_page(ctx.store, job_id, 0, 100)
    assert [i for i, r in enumerate(rows) if r["error"]] == [3, 7]
    assert all("a worker died while decoding or scoring this image" in rows[i]["error"]
               for i in (3, 7))
    assert all(r["label"] for i, r in enumerate(rows) if i not in (3, 7))
    assert ctx.shards.convict_in_flight(job_id, 0) == {3, 7}  # no image left marked in flight


def test_a_clean_failure_while_scoring_alone_marks_no_image_as_poison(ctx, base_dir,
                                                                      model_version, unique,
                                                                      monkeypatch):
    job_id = job_on_folder(ctx, base_dir, model_version, f"clean-{unique}", 4)
    plan(ctx, job_id)
    for _ in range(ctx.settings.shard_max_attempts):
        ctx.shards.count_attempt(job_id, 0)

    def outage(*args, **kwargs):
        raise ConnectionError("the store went away")

    monkeypatch.setattr(classify.Scorer, "score", outage)
    with pytest.raises(ConnectionError):
        run_shard(ctx, job_id, 0)
    assert ctx.shards.convict_in_flight(job_id, 0) == set()  # an error is not a death
    assert ctx.shards.attempts(job_id) == {0: ctx.settings.shard_max_attempts}  # taken back
    fail_job(ctx, job_id, "test over")  # not left active for the watchdog tests


def test_the_watchdog_requeues_a_shard_whose_worker_vanished(ctx, sent, base_dir, model_version,
                                                              unique):
    from worker.watchdog import Watchdog

    job_id = job_on_folder(ctx, base_dir, model_version, f"dog-{unique}", 30)
    plan(ctx, job_id)
    assert run_shard(ctx, job_id, 0)
    # Shard 1: a worker started it (counted a delivery) and holds a live lease.
    # Shard 2: a worker started it and died: its lease lapsed.
    ctx.shards.count_attempt(job_id, 1)
    ctx.leases.acquire(job_id, leases.shard(1), "live-worker", 30)
    ctx.shards.count_attempt(job_id, 2)
    sent.clear()
    dog = Watchdog(ctx, stall_s=3600)
    assert [r for r in dog.sweep() if r[0] == job_id] == [(job_id, leases.shard(2))]
    # back through the scheduler (a token, no task naming it), ahead of the shards never run
    assert sent and all(s == TOKEN for s in sent)
    assert ctx.sched.redis.lrange(redis_keys.sched_retry(job_id), 0, -1) == [b"2"]
    # already requeued: not again while the marker lasts
    assert [r for r in dog.sweep() if r[0] == job_id] == []
    # The delivery that picks it takes the shard up (clearing the marker) and finishes it.
    assert run_shard(ctx, job_id, 2)
    assert ctx.shards.attempts(job_id)[2] == 2 and ctx.shards.is_counted(job_id, 2)


def test_the_watchdog_requeues_a_stalled_job_that_lost_its_messages(ctx, sent, base_dir,
                                                                     model_version, unique):
    from worker.watchdog import Watchdog

    queued = job_on_folder(ctx, base_dir, model_version, f"lostplan-{unique}", 5)
    planned = job_on_folder(ctx, base_dir, model_version, f"lostshards-{unique}", 25)
    plan(ctx, planned)
    assert runner.take_turn(ctx) == (planned, 0)  # picked by a worker that died at once
    sent.clear()  # the plan of one and the tokens of the other are lost
    dog = Watchdog(ctx, stall_s=0.2)
    assert dog.sweep() == []  # first sight: not stalled yet
    assert sent and all(s == TOKEN for s in sent)  # but tokens for the shards still waiting go out again
    time.sleep(0.3)
    requeued = dog.sweep()
    assert (queued, "plan:lease") in requeued
    assert (planned, leases.shard(0)) in requeued  # released, never counted, no lease
    assert [a for n, a in sent if n == CLASSIFY_SHARD and a] == []  # no task names it:
    # the scheduler hands it out again, ahead of the job's shards never released
    assert ctx.sched.redis.lrange(redis_keys.sched_retry(planned), 0, -1) == [b"0"]
    # A finished job leaves the active index.
    ctx.jobs.set_status(queued, JobStatus.CANCELLED)
    dog.sweep()
    assert queued not in ctx.jobs.active()


def test_one_worker_sweeps_for_the_whole_cluster(ctx):
    from worker.watchdog import Watchdog, interval, tick

    r = ctx.leases.redis
    r.delete(redis_keys.SWEEPER)
    first, second = Watchdog(ctx, stall_s=3600), Watchdog(ctx, stall_s=3600)
    assert tick(first, "worker-a") is True
    assert tick(second, "worker-b") is False  # a holds the sweeper's lease
    assert tick(first, "worker-a") is True  # and renews it each tick
    assert 0 < r.ttl(redis_keys.SWEEPER) <= 3 * interval(ctx)
    r.delete(redis_keys.SWEEPER)  # a died: its lease lapses
    assert tick(second, "worker-b") is True
    assert tick(first, "worker-a") is False


def test_the_record_keeps_a_bounded_summary_and_summary_json_every_group(ctx, base_dir,
                                                                         model_version, unique):
    ctx.settings = ctx.settings.replace(summary_max_groups=1)
    job_id = job_on_folder(ctx, base_dir, model_version, f"groups-{unique}", 12)  # 2 groups
    plan(ctx, job_id)
    assert all(run_shard(ctx, job_id, i) for i in range(2))
    finalize(ctx, job_id)
    summary = ctx.jobs.get(job_id)["summary"]
    assert len(summary["groups"]) == 1 and summary["other_groups"]["groups"] == 1
    assert summary["overall"]["images"] == 12
    full = json.loads(ctx.store.get(layout.job_key(job_id, layout.SUMMARY)))
    assert len(full["groups"]) == 2 and "other_groups" not in full


def test_the_watchdog_requeues_a_lost_shard_while_its_plan_still_lists(ctx, sent, base_dir,
                                                                       model_version, unique):
    from worker.watchdog import Watchdog

    # Given a job whose plan is still listing (it holds the plan lease; 3 shards queued so far)
    job_id = job_on_folder(ctx, base_dir, model_version, f"midplan-{unique}", 5)
    ctx.jobs.set_status(job_id, JobStatus.RUNNING)
    ctx.jobs.update(job_id, planned=3)
    ctx.leases.acquire(job_id, leases.PLAN, "live-planner", 30)
    # and a worker that started shard 1 and died (a delivery counted, its lease gone)
    ctx.shards.count_attempt(job_id, 1)
    sent.clear()
    # When the watchdog sweeps, Then shard 1 goes back to the scheduler, and nothing else
    assert (job_id, leases.shard(1)) in Watchdog(ctx, stall_s=3600).sweep()
    assert [a for n, a in sent if a and a[0] == job_id] == []
    assert ctx.sched.redis.lrange(redis_keys.sched_retry(job_id), 0, -1) == [b"1"]
    ctx.jobs.set_status(job_id, JobStatus.CANCELLED)  # not left active for later sweeps


def test_a_step_waiting_to_retry_is_not_requeued_by_the_watchdog(ctx, sent, base_dir,
                                                                 model_version, unique):
    from worker.runner import hold_for_retry
    from worker.watchdog import Watchdog

    # Given a running job whose plan met a transient error and waits out its retry countdown
    job_id = job_on_folder(ctx, base_dir, model_version, f"retrywait-{unique}", 5)
    other = job_on_folder(ctx, base_dir, model_version, f"vanished-{unique}", 5)
    for job in (job_id, other):
        ctx.jobs.set_status(job, JobStatus.RUNNING)
    hold_for_retry(ctx, job_id, leases.PLAN, countdown=30)
    sent.clear()
    # When the watchdog sweeps, Then it leaves the waiting plan alone (no second retry chain),
    # while a plan that really vanished (no lease, no retry) is queued again
    requeued = Watchdog(ctx, stall_s=3600).sweep()
    assert (job_id, leases.PLAN) not in requeued and (other, leases.PLAN) in requeued
    assert [a for n, a in sent if a] == [[other]]
    for job in (job_id, other):
        ctx.jobs.set_status(job, JobStatus.CANCELLED)  # not left active for later sweeps


def test_a_shard_picked_by_a_worker_that_died_before_its_lease_comes_back(ctx, sent, base_dir,
                                                                          model_version, unique):
    from worker.watchdog import Watchdog

    # Given a job whose shard 0 was picked by a worker that died before taking its lease (no
    # delivery counted), while other work keeps the queue busy (so the job never looks stalled)
    job_id = job_on_folder(ctx, base_dir, model_version, f"picked-{unique}", 25)
    plan(ctx, job_id)
    assert runner.take_turn(ctx) == (job_id, 0)
    assert run_next(ctx) == (job_id, 1)  # a live worker's shard: counted, not watched
    sent.clear()
    # When the watchdog sweeps once the pick is older than its grace
    requeued = Watchdog(ctx, stall_s=3600, pick_grace_s=0).sweep()
    # Then shard 0 goes back to the scheduler, and nothing else of the job
    assert [n for j, n in requeued if j == job_id] == [leases.shard(0)]
    assert [a for n, a in sent if a and a[0] == job_id] == []
    assert run_next(ctx) == (job_id, 0)  # ahead of shard 2, never picked yet
    assert ctx.sched.picked_before(job_id, 0) == set()  # counted: no longer watched
    fail_job(ctx, job_id, "test over")  # not left active for later sweeps
