"""Fixtures that start real servers once per run: redis-server, SeaweedFS S3, a Celery worker."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid

import pytest
import redis

# boto3 signs requests even for the test S3 server, which accepts any key; never ask EC2 metadata.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "facesense-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "facesense-test-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from cli.launcher import start_redis, start_workers, stop
from facesense.settings import Settings
from tests.browser import browser, page, server  # noqa: F401 (the dashboard tests' fixtures)
from tests.servers import s3_client, start_seaweed

BUCKET = "facesense-test"


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    """A per-run folder; it is also the allowed root for local sources."""
    return tmp_path_factory.mktemp("facesense")


@pytest.fixture(scope="session")
def redis_url(base_dir):
    """A real redis-server on a free loopback port."""
    proc, url = start_redis(base_dir / "redis")
    yield url
    stop([proc])


@pytest.fixture(scope="session")
def s3_endpoint(base_dir):
    """A real SeaweedFS S3 server on loopback, with the test bucket created."""
    proc, endpoint = start_seaweed(base_dir / "seaweed")
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    stop([proc], timeout=3)  # throwaway data: no need to wait for a graceful stop


@pytest.fixture(scope="session")
def s3(s3_endpoint):
    """A boto3 client for the test S3 server."""
    return s3_client(s3_endpoint)


@pytest.fixture(scope="session")
def settings(base_dir, redis_url, s3_endpoint) -> Settings:
    """Settings shared by the test worker and the in-process API: S3 store, small shards."""
    return Settings(redis_url=redis_url, store=f"s3://{BUCKET}/store",
                    s3_endpoint_url=s3_endpoint, allowed_roots=(str(base_dir),),
                    data_dir=str(base_dir / "var"), shard_size=64, batch_size=32,
                    decode_threads=4, task_max_retries=2,
                    # URL jobs and webhooks reach test servers on 127.0.0.1 only (not 127.0.0.2)
                    url_allow_networks="127.0.0.1/32", webhook_secret="facesense-test-secret",
                    webhook_backoff_s=1)


@pytest.fixture(scope="session")
def model_version(settings) -> dict:
    """A seeded, randomly initialised 2-class AlexNet registered and promoted to production."""
    import torch

    from facesense.registry import Registry
    from facesense.storage import store_from_settings
    from runtime.network import build_alexnet, register_state

    torch.manual_seed(0)
    registry = Registry(store_from_settings(settings))
    manifest = register_state(registry, build_alexnet(2).state_dict(), ["happy", "sad"],
                              source="tests: random init")
    registry.promote(manifest["version"], "production", by="tests")
    return manifest


@pytest.fixture(scope="session")
def worker(settings, model_version, base_dir):
    """One real Celery worker process (solo pool) on the inference queue."""
    procs = start_workers(settings, 1, queues="inference")
    wait_for_workers(settings, procs)
    yield procs[0]
    stop(procs)


def wait_for_workers(settings, procs, count: int = 1) -> None:
    """Block until count workers answer a ping (or fail the test if one exits)."""
    from facesense.queue import make_celery

    app = make_celery(settings)
    deadline = time.monotonic() + 120
    while True:
        try:
            if len(app.control.ping(timeout=1)) >= count:
                return
        except (ConnectionError, redis.exceptions.ConnectionError):
            pass  # a pooled connection to a Redis that restarted: the next ping reconnects
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            stop(procs)
            pytest.fail("the Celery worker did not start")


@pytest.fixture
def client(settings, model_version):
    """A test client of the API app (in process, real Redis and S3 behind it)."""
    from api import create_app

    return create_app(settings).test_client()


@pytest.fixture
def unique() -> str:
    """A short unique name for prefixes and folders."""
    return uuid.uuid4().hex[:8]


def messages_for(r: redis.Redis, job_id: str, queue: str = "inference") -> int:
    """Task messages for a job still waiting in the queue or delivered but not yet acked (late
    acks: a message leaves kombu's unacked hash only when its task returns)."""
    waiting = r.lrange(queue, 0, -1)
    delivered = [json.loads(raw)[0] for raw in r.hvals("unacked")]
    bodies = [json.loads(m)["body"] for m in waiting] + [m["body"] for m in delivered]
    return sum(1 for b in bodies if json.loads(base64.b64decode(b))[0][:1] == [job_id])


def wait_for_no_messages(redis_url: str, job_id: str, timeout: float = 60) -> None:
    """Block until every task queued for the job has been delivered and has returned."""
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while messages_for(r, job_id):
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still has task messages after {timeout}s")
        time.sleep(0.05)


def wait_for_job(client, job_id: str, timeout: float = 240) -> dict:
    """Poll the API until the job finishes; returns its record."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/v1/jobs/{job_id}").get_json()
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {record['status']} after {timeout}s: "
                                 f"{record}")
        time.sleep(0.25)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The private stack for tests that kill workers or Redis (tests.stack), shared by them."""
    from tests.stack import FAST, Stack, register_small_model

    root = tmp_path_factory.mktemp("faults")
    redis_proc, url = start_redis(root / "redis")
    # fp32, as test_cli's and test_sentinel's stacks: "auto" would time AlexNet at 224 px in
    # every worker (and prefork child) these tests start and kill (the choice: test_precision)
    settings = Settings(redis_url=url, store=str(root / "store"), allowed_roots=(str(root),),
                        data_dir=str(root / "var"), precision="fp32", **FAST)
    register_small_model(settings)
    s = Stack(root, settings, redis_proc)
    yield s
    s.stop_workers()
    stop([s.redis_proc])


def private_context(settings, db: int, sent: list):
    """A scoring worker's context on its own Redis database (the session worker, on database 0,
    never sees its jobs) whose queue is the `sent` list instead of a broker."""
    from facesense.state import redis_keys
    from worker.context import build_context
    from worker.model_cache import add_models

    private = settings.redis_url.rsplit("/", 1)[0] + f"/{db}"
    ctx = add_models(build_context(settings.replace(shard_size=10, redis_url=private),
                                   lambda name, args: sent.append((name, args))))
    ctx.sched.redis.delete(*redis_keys.SCHED_RINGS)  # no turns for earlier tests' jobs
    return ctx
