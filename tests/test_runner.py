"""The step runner and the lifecycle on real Redis: what a busy lease means per row, when the
finaliser is queued, and how failing or cancelling a job leaves the scheduler."""

from __future__ import annotations

import itertools

import pytest
from celery import Celery
from celery.exceptions import Retry

from facesense.inputs.sources import normalize_source
from facesense.queue import CLASSIFY_SHARD, FINALIZE_CLASSIFY
from facesense.state import redis_keys
from facesense.state.leases import LeaseBusy
from facesense.state.status import JobStatus
from facesense.storage import layout
from tests.conftest import private_context
from tests.imagegen import make_folder
from worker import runner, steps

TOKEN = (CLASSIFY_SHARD, [])
PLAN, SHARD, FINALIZE = (steps.of("classify", n) for n in ("plan", "shard", "finalize"))


@pytest.fixture
def sent() -> list[tuple[str, list]]:
    """The tasks the runner queued, as (name, args)."""
    return []


@pytest.fixture
def ctx(settings, model_version, sent):
    """A worker context on Redis database 4, queueing into `sent`."""
    return private_context(settings, 4, sent)


def new_job(ctx, base_dir, model_version, name: str, n: int, **fields) -> str:
    folder = base_dir / name
    make_folder(folder, n, max_side=120, corrupt=False)
    return ctx.jobs.create("classify", source=normalize_source(str(folder), ctx.settings),
                           model="production", model_version=model_version["version"],
                           classes=model_version["classes"], **fields)["id"]


def finals(sent) -> list[list]:
    return [a for n, a in sent if n == FINALIZE_CLASSIFY]


def test_the_table_names_each_step_once_and_every_function_resolves():
    assert len({(s.job_type, s.name) for s in steps.STEPS}) == len(steps.STEPS)
    assert len({s.task for s in steps.STEPS}) == len(steps.STEPS)
    assert all(callable(s.function()) for s in steps.STEPS)
    assert steps.shard_of("classify") is SHARD and steps.shard_of(None) is SHARD
    assert SHARD.lease(3) == "shard:3:lease" and PLAN.busy is steps.Busy.SKIP
    assert "finalize:lease retry" in steps.table()


def test_a_busy_lease_skips_a_skip_row_and_runs_nothing(ctx, sent, base_dir, model_version,
                                                        unique):
    # Given a job whose plan lease a live worker holds
    job_id = new_job(ctx, base_dir, model_version, f"busy-plan-{unique}", 5)
    assert ctx.leases.acquire(job_id, PLAN.lease(), "live-planner", 30)
    # When another delivery of the plan runs, Then it is skipped: nothing listed, no tokens
    assert runner.perform(ctx, PLAN, job_id) is None
    record = ctx.jobs.get(job_id)
    assert "planned" not in record and record["shards"] == 0 and sent == []
    assert not ctx.store.exists(layout.plan_key(job_id, 0))


def test_a_busy_lease_retries_a_retry_row_after_a_lease(ctx, base_dir, model_version, unique):
    # Given a planned and scored job whose finalise lease a live worker holds
    job_id = new_job(ctx, base_dir, model_version, f"busy-final-{unique}", 5)
    runner.perform(ctx, PLAN, job_id)
    assert runner.perform(ctx, SHARD, job_id, 0) is True
    lease = redis_keys.lease(job_id, FINALIZE.lease())
    ctx.leases.redis.set(lease, "live-finaliser", ex=30)
    with pytest.raises(LeaseBusy):
        runner.perform(ctx, FINALIZE, job_id)
    # When a real Celery task runs the step (eagerly: each retry runs again at once)
    waits: list[float] = []
    app = Celery("runner-test", set_as_current=False)

    @app.task(name=f"test.finalize.{unique}", bind=True, max_retries=None)
    def finalize(self, job_id: str):
        try:
            return runner.run_task(self, ctx, FINALIZE, job_id)
        except Retry as retry:
            waits.append(retry.when)
            # the step waiting out its countdown is marked requeued: the watchdog leaves it
            assert ctx.leases.redis.ttl(redis_keys.requeued(job_id, FINALIZE.lease())) > 0
            ctx.leases.redis.delete(lease)  # then the live worker finishes and lets go
            raise

    finalize.apply(args=[job_id])
    # Then it waited about one lease (stretched by at most the jitter), and then finished
    ttl = ctx.settings.lease_ttl_s
    assert len(waits) == 1 and ttl <= waits[0] <= ttl * (1 + runner.JITTER)
    assert ctx.jobs.get(job_id)["status"] == JobStatus.SUCCEEDED


def test_the_finaliser_is_queued_exactly_when_the_last_shard_is_counted(ctx, sent, base_dir,
                                                                        model_version, unique):
    job_id = new_job(ctx, base_dir, model_version, f"last-{unique}", 25)  # 3 shards
    assert runner.perform(ctx, PLAN, job_id) == 3
    assert sent == [TOKEN] * 3 and finals(sent) == []
    for index in (0, 1, 1):  # shard 1 delivered twice
        runner.perform(ctx, SHARD, job_id, index)
        assert finals(sent) == []
    assert runner.perform(ctx, SHARD, job_id, 2) is True
    assert finals(sent) == [[job_id]]
    assert runner.perform(ctx, SHARD, job_id, 2) is False  # a late copy queues no second one
    assert finals(sent) == [[job_id]]
    runner.perform(ctx, FINALIZE, job_id)
    assert ctx.jobs.get(job_id)["status"] == JobStatus.SUCCEEDED


def test_failing_a_job_forgets_it_and_lets_its_keys_next_job_start(ctx, sent, base_dir,
                                                                   model_version, unique):
    # Given a key allowed one running job: its first job started a shard, its second is held
    quota = {"jobs": 1, "shards": 0}
    first, second = (new_job(ctx, base_dir, model_version, f"quota-{n}-{unique}", n,
                             owner=f"key-{unique}", quota=quota) for n in (5, 15))
    runner.perform(ctx, PLAN, first)
    assert ctx.sched.pick() == (first, 0)
    runner.perform(ctx, PLAN, second)
    sent.clear()
    runner.lifecycle(ctx).after_step()
    assert ctx.sched.standing(second)["held"] == "jobs" and sent == []
    # When the first job fails
    assert runner.lifecycle(ctx).fail(first, "a reason") is True
    # Then it is failed, archived and forgotten, and tokens go out for the second job at once
    assert ctx.jobs.get(first)["status"] == JobStatus.FAILED
    assert ctx.store.exists(layout.job_record(first))
    assert ctx.sched.standing(first) is None
    assert sent and all(s == TOKEN for s in sent)
    assert ctx.sched.pick() == (second, 0)
    assert runner.lifecycle(ctx).fail(first, "again") is False  # already finished
    runner.lifecycle(ctx).fail(second, "test over")


def test_cancel_leaves_a_scoring_jobs_webhook_to_its_finaliser(ctx, sent, base_dir,
                                                               model_version, unique):
    announced: list[str] = []
    ctx.jobs.on_finished = announced.append
    job_id = new_job(ctx, base_dir, model_version, f"cancel-{unique}", 15,
                     callback_url="http://127.0.0.1:9/hook")
    runner.perform(ctx, PLAN, job_id)
    assert runner.perform(ctx, SHARD, job_id, 0) is True
    sent.clear()
    life = runner.lifecycle(ctx)
    assert life.cancel(job_id) is True and life.cancel(job_id) is False
    assert finals(sent) == [[job_id]] and announced == []  # the merge first, then the webhook
    runner.perform(ctx, FINALIZE, job_id)
    record = ctx.jobs.get(job_id)
    assert record["partial"] is True and record["summary"]["overall"]["images"] == 10
    assert announced == [job_id] and ctx.sched.standing(job_id) is None


def test_a_step_waiting_out_its_retry_is_not_picked_up_twice(ctx, base_dir, model_version,
                                                             unique):
    job_id = new_job(ctx, base_dir, model_version, f"hold-{unique}", 5)
    runner.hold_for_retry(ctx, job_id, PLAN.lease(), 20)
    ttl = ctx.leases.redis.ttl(redis_keys.requeued(job_id, PLAN.lease()))
    assert 20 < ttl <= 20 + ctx.settings.lease_ttl_s
    assert not ctx.leases.mark_requeued(job_id, PLAN.lease(), 60)  # the watchdog's check
    ctx.jobs.set_status(job_id, JobStatus.CANCELLED)


def test_a_streamed_plan_sends_tokens_while_it_lists(ctx, sent, base_dir, model_version,
                                                     unique, monkeypatch):
    from worker.steps import plan as planning

    monkeypatch.setattr(planning, "PLAN_BATCH", 1)
    job_id = new_job(ctx, base_dir, model_version, f"stream-{unique}", 25)
    tokens_at_batch: list[int] = []
    real_add = ctx.sched.add

    def add(job, planned, listed=False):
        tokens_at_batch.append(len(sent))
        return real_add(job, planned, listed=listed)

    monkeypatch.setattr(ctx.sched, "add", add)
    assert runner.perform(ctx, PLAN, job_id) == 3
    # each batch's tokens went out before the next batch was released; the listing's end
    # (which releases nothing new) sent none
    assert len(tokens_at_batch) == 4 and tokens_at_batch[0] == 0
    assert all(a < b for a, b in itertools.pairwise(tokens_at_batch[:3]))
    assert tokens_at_batch[-1] == len(sent) and all(s == TOKEN for s in sent)
    ctx.jobs.set_status(job_id, JobStatus.CANCELLED)
