"""The Celery app shared by the API (which only sends tasks by name) and the workers."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from facesense.redisconn import broker
from facesense.settings import Settings

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
    url, transport = broker(settings)  # a Redis URL, or sentinel:// URLs and their master_name
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
