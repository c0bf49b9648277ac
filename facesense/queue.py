"""What the API and the workers both build, wired in one place so they agree: the Celery app
(the API only sends tasks by name) and the job services on Redis and the store (wire): records
that queue a finished job's webhook whoever ends it, and a scheduler whose quotas and tokens
read the same in-flight and depth settings wherever they are asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis as redis_lib
from celery import Celery
from kombu import Queue

from facesense import redisconn
from facesense.outputs.webhooks import DELIVER as WEBHOOK
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.state.leases import Leases
from facesense.state.lifecycle import Lifecycle
from facesense.state.records import JobRecords
from facesense.state.scheduler import Scheduler
from facesense.state.shards import ShardBook
from facesense.storage import Store, store_from_settings

INFERENCE_QUEUE = "inference"  # shard tokens: the data path, served by scoring workers
TRAINING_QUEUE = "training"
CONTROL_QUEUE = "control"  # plans, finalisers, webhooks: never wait behind shards

# Task names, so the API can send without importing worker code (or torch).
PLAN_CLASSIFY = "facesense.classify.plan"
CLASSIFY_SHARD = "facesense.classify.shard"  # no args: a token (the scheduler picks); or a retry
FINALIZE_CLASSIFY = "facesense.classify.finalize"
TRAIN = "facesense.train"


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the configured Redis: late acks, prefetch 1, requeue on worker loss."""
    url, transport = redisconn.broker(settings)  # a Redis URL, or sentinel:// URLs and their master_name
    app = Celery("facesense", broker=url, set_as_current=False)
    app.conf.update(
        task_queues=[Queue(INFERENCE_QUEUE), Queue(TRAINING_QUEUE), Queue(CONTROL_QUEUE)],
        task_default_queue=CONTROL_QUEUE,
        task_routes={CLASSIFY_SHARD: {"queue": INFERENCE_QUEUE},
                     TRAIN: {"queue": TRAINING_QUEUE}},  # the rest: control
        # At-least-once: ack after the task ran, requeue if the worker process dies mid-task.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # job state lives in our own records
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # reconnect for as long as Redis is away
        broker_transport_options={"visibility_timeout": settings.visibility_timeout, **transport},
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # for Flower
        task_send_sent_event=True,
    )
    return app


Send = Callable[[str, list], None]  # send a task by name with positional args


def sender(app: Celery) -> Send:
    """Send a task by name with positional args on app: how the API and workers enqueue."""
    return lambda name, args: app.send_task(name, args=args)


@dataclass
class CoreServices:
    """The store, Redis and the job state on it: what the API and every worker share."""

    settings: Settings
    store: Store
    redis: redis_lib.Redis
    jobs: JobRecords
    registry: Registry
    sched: Scheduler
    leases: Leases
    shards: ShardBook


def wire(settings: Settings, send: Send, **redis_options) -> CoreServices:
    """Build the shared services; send queues tasks (every final status queues its webhook
    through it). redis_options go to the connection (timeouts, health checks)."""
    store = store_from_settings(settings)
    redis = redisconn.connect(settings, **redis_options)
    jobs = JobRecords(redis, store, settings.job_ttl_s,
                      on_finished=lambda job_id: send(WEBHOOK, [job_id]))
    # a picked shard counts for its key for four leases, then for as long as its lease is held
    sched = Scheduler(redis, settings.job_ttl_s, 4 * settings.lease_ttl_s, settings.queue_depth)
    return CoreServices(settings, store, redis, jobs, Registry(store), sched, Leases(redis),
                        ShardBook(redis, settings.job_ttl_s))


def lifecycle(jobs: JobRecords, sched: Scheduler, send: Send) -> Lifecycle:
    """A job's lifecycle (state.lifecycle), sending the shard tokens and the finaliser by name:
    how the API's cancel and the workers' runner end jobs alike."""
    return Lifecycle(jobs, sched, send, token=CLASSIFY_SHARD, token_queue=INFERENCE_QUEUE,
                     finalize=FINALIZE_CLASSIFY)
