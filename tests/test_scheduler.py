"""The fair scheduler on a real Redis: round-robin, priorities, quotas, retries, tokens."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from facesense.state import leases, redis_keys
from facesense.state.leases import Leases
from facesense.state.scheduler import Scheduler


@pytest.fixture
def sched(redis_url):
    """A scheduler on an empty database of the test Redis (db 5), emptied again after."""
    r = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/5")
    r.flushdb()
    yield Scheduler(r, in_flight_s=60, depth=8)
    r.flushdb()


def job(sched: Scheduler, shards: int, owner: str = "alice", priority: str = "normal",
        listed: bool = True, **quota) -> str:
    """A running job record with `shards` shards registered."""
    job_id = uuid.uuid4().hex[:12]
    sched.redis.hset(redis_keys.job(job_id), mapping={"status": json.dumps("running"),
                                                      "owner": json.dumps(owner)})
    sched.register(job_id, owner, priority, **quota)
    sched.add(job_id, shards, listed=listed)
    return job_id


def picks(sched: Scheduler, n: int) -> list[tuple[str, int]]:
    return [sched.pick() for _ in range(n)]


def test_round_robin_between_jobs_of_one_priority(sched):
    # Given a big job that has had a turn, then a small one
    big = job(sched, 100)
    assert sched.pick() == (big, 0)
    small = job(sched, 2)
    # When four shards are picked
    order = picks(sched, 4)
    # Then the newcomer has the next turn, the jobs take turns, each job's shards in order
    assert order == [(small, 0), (big, 1), (small, 1), (big, 2)]
    # and with the small job done the big one has the workers to itself
    assert picks(sched, 2) == [(big, 3), (big, 4)]


def test_high_priority_goes_before_queued_normal_shards(sched):
    normal_a, normal_b = job(sched, 50), job(sched, 50)
    sched.pick()
    high = job(sched, 3, priority="high")
    assert picks(sched, 3) == [(high, 0), (high, 1), (high, 2)]
    assert {j for j, _ in picks(sched, 2)} == {normal_a, normal_b}


def test_low_priority_runs_only_when_nothing_else_waits(sched):
    low = job(sched, 2, priority="low")
    normal = job(sched, 1)
    assert picks(sched, 3) == [(normal, 0), (low, 0), (low, 1)]
    assert sched.pick() is None


def test_shard_quota_holds_a_key_back_until_a_shard_ends(sched):
    # Given alice may have 2 shards in flight, and bob none limited
    a = job(sched, 10, owner="alice", max_shards=2)
    b = job(sched, 10, owner="bob")
    assert picks(sched, 3) == [(b, 0), (a, 0), (b, 1)]
    assert sched.pick() == (a, 1)
    # Then alice's third shard waits, and her job's standing says why
    assert picks(sched, 2) == [(b, 2), (b, 3)]
    assert sched.standing(a)["held"] == "shards"
    # When one of her shards ends, she gets the next turn that comes to her
    sched.done(a, 0)
    assert (a, 2) in picks(sched, 2)


def test_running_jobs_quota_holds_the_next_job_of_the_same_key(sched):
    second = job(sched, 3, owner="carol", max_jobs=1)
    first = job(sched, 3, owner="carol", max_jobs=1)  # the newcomer has the first turn
    assert picks(sched, 4) == [(first, 0), (first, 1), (first, 2), None]
    assert sched.standing(second)["held"] == "jobs"
    # the first job finishing frees the slot
    sched.redis.hset(redis_keys.job(first), "status", json.dumps("succeeded"))
    assert sched.pick() == (second, 0)
    assert sched.standing(second)["held"] is None


def test_retried_shards_run_before_new_ones_and_a_listed_job_leaves_the_ring(sched):
    j = job(sched, 2)
    assert picks(sched, 3) == [(j, 0), (j, 1), None]
    sched.retry(j, [0])
    assert picks(sched, 2) == [(j, 0), None]
    assert sched.redis.llen(redis_keys.SCHED_RINGS[1]) == 0


def test_a_job_still_listing_keeps_its_turn_and_finished_jobs_are_skipped(sched):
    listing = job(sched, 1, listed=False)
    cancelled = job(sched, 5)
    sched.redis.hset(redis_keys.job(cancelled), "status", json.dumps("cancelled"))
    assert picks(sched, 2) == [(listing, 0), None]
    sched.add(listing, 2)
    assert sched.pick() == (listing, 1)


def test_tokens_fill_the_queue_up_to_depth_with_work_that_can_start(sched):
    assert sched.tokens_wanted("q") == 0
    job(sched, 3)
    assert sched.tokens_wanted("q") == 3
    job(sched, 100)
    assert sched.tokens_wanted("q") == 8  # depth
    sched.redis.rpush("q", *range(5))
    assert sched.tokens_wanted("q") == 3


def test_standing_counts_what_starts_before_the_job(sched):
    a, b = job(sched, 10), job(sched, 10)
    high = job(sched, 4, priority="high")
    standing = sched.standing(b)
    # the ring is [b, a]: b is next in its ring, behind the high job's 4 shards
    assert standing == {"priority": "normal", "shards_waiting": 10, "jobs_ahead": 1,
                        "shards_ahead": 4, "training_ahead": 0, "held": None}
    assert sched.standing(a)["jobs_ahead"] == 2 and sched.standing(a)["shards_ahead"] == 5
    assert sched.standing(high)["jobs_ahead"] == 0
    assert sched.waiting() == 24
    sched.forget(a)
    assert sched.standing(a) is None


def test_a_quota_limits_the_tokens_its_key_gets(sched):
    # Given a key allowed 2 shards in flight with 10 waiting, another key's job, and a key
    # allowed one running job with two jobs waiting
    job(sched, 10, owner="dora", max_shards=2)
    assert sched.tokens_wanted("q") == 2  # not 8: the other 8 could not start
    job(sched, 3, owner="eve", max_jobs=1)
    job(sched, 3, owner="eve", max_jobs=1)
    assert sched.tokens_wanted("q") == 2 + 3  # one of eve's jobs may start, not both
    sched.pick(), sched.pick()  # eve's newer job and dora's first shard
    assert sched.tokens_wanted("q") == 1 + 2


def test_keys_without_quotas_leave_no_quota_sets_behind(sched):
    j = job(sched, 3, owner="frank")
    picks(sched, 3)
    assert not list(sched.redis.scan_iter(redis_keys.OWNER_PREFIX + "*"))
    assert sched.picked_before(j, 0) == {0, 1, 2}  # what the watchdog watches until counted


def test_a_shard_ending_after_its_job_was_forgotten_frees_its_quota_slot(sched):
    j = job(sched, 3, owner="gina", max_shards=1)
    assert sched.pick() == (j, 0)
    other = job(sched, 3, owner="gina", max_shards=1)
    sched.redis.hset(redis_keys.job(j), "status", json.dumps("cancelled"))
    sched.forget(j)  # cancelled while its shard ran
    sched.done(j, 0)
    assert sched.pick() == (other, 0)


def test_the_held_reason_is_read_live_not_as_last_seen(sched):
    a = job(sched, 5, owner="hal", max_shards=1)
    assert sched.pick() == (a, 0)
    assert sched.standing(a)["held"] == "shards"  # no pick has looked at it since
    sched.done(a, 0)
    assert sched.standing(a)["held"] is None


def test_a_training_run_takes_one_of_its_keys_running_job_slots(sched):
    # Given a key allowed one running job, whose training run claims its slot
    training = uuid.uuid4().hex[:12]
    sched.redis.hset(redis_keys.job(training), mapping={"status": json.dumps("running"),
                                                        "owner": json.dumps("alice")})
    assert sched.claim_training(training, "alice", 1) is True
    # When the key's scoring job waits, then it is held by that quota, and another key's is not
    scoring = job(sched, 2, max_jobs=1)
    other = job(sched, 1, owner="bob", max_jobs=1)
    assert sched.pick() == (other, 0) and sched.pick() is None
    assert sched.standing(scoring)["held"] == "jobs"
    # and a second training run of the key waits too, until the first has ended
    second = uuid.uuid4().hex[:12]
    sched.redis.hset(redis_keys.job(second), mapping={"status": json.dumps("queued"),
                                                      "owner": json.dumps("alice")})
    assert sched.claim_training(second, "alice", 1) is False
    sched.redis.hset(redis_keys.job(training), "status", json.dumps("succeeded"))
    assert sched.claim_training(second, "alice", 1) is True
    assert sched.pick() is None  # the second run holds the slot now
    # a key with no quota always starts
    assert sched.claim_training(uuid.uuid4().hex[:12], "carol", 0) is True


def test_a_waiting_job_counts_training_runs_on_workers_that_also_score(sched):
    waiting = job(sched, 3)
    assert sched.standing(waiting)["training_ahead"] == 0
    sched.training_on_shared_workers("t1", True, 60)
    sched.training_on_shared_workers("t2", True, -1)  # a note that lapsed: its worker died
    assert sched.standing(waiting)["training_ahead"] == 1
    sched.training_on_shared_workers("t1", False, 0)
    assert sched.standing(waiting)["training_ahead"] == 0


def test_a_shard_running_past_its_in_flight_note_counts_while_its_lease_is_held(sched):
    # Given a key allowed one shard in flight, on a scheduler whose in-flight notes lapse at
    # once (as a shard running longer than four leases would find it)
    quick = Scheduler(sched.redis, in_flight_s=0, depth=8)
    j = job(quick, 3, owner="ivy", max_shards=1)
    assert quick.pick() == (j, 0)
    # When a worker holds shard 0's lease past the note, then the key's slot stays taken
    shard_leases = Leases(sched.redis)
    assert shard_leases.acquire(j, leases.shard(0), "worker-a", 60)
    assert quick.pick() is None and quick.standing(j)["held"] == "shards"
    assert quick.tokens_wanted("q") == 0
    # and once the lease is gone (the worker died, or ended without a word), the slot frees
    shard_leases.release(j, leases.shard(0), "worker-a")
    assert quick.pick() == (j, 1)


def test_the_scheduler_writes_the_same_key_names_as_before(sched):
    # The names are a stored format: a scheduler of this release reads a running cluster's keys
    j = job(sched, 2, owner="kim", max_jobs=1, max_shards=1)
    sched.retry(j, [1])
    assert sched.pick() == (j, 1)
    names = {k.decode() for k in sched.redis.scan_iter("*")}
    assert names == {f"facesense:job:{j}", f"facesense:job:{j}:sched",
                     f"facesense:job:{j}:sched:picked", "facesense:sched:ring:normal",
                     "facesense:sched:owner:kim:running", "facesense:sched:owner:kim:inflight"}
    assert sched.redis.zrange("facesense:sched:owner:kim:inflight", 0, -1) == [f"{j}:1".encode()]
    assert sched.redis.smembers("facesense:sched:owner:kim:running") == {j.encode()}
