"""GET /metrics: Prometheus metrics of the API (requests, latency) and of the queue (from Redis).

Requests are counted by the route's rule (/v1/jobs/<job_id>), never the raw path, so the number
of series stays bounded. Queue depth and job counts are read from Redis at scrape time, cheaply:
three LLENs, the scheduler's rings, the active set (queued and running jobs only) and one hash
of finished counts.
"""

from __future__ import annotations

import json
import os
import time

import redis as redis_lib
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from api.auth import public
from api.services import EXTENSION, services
from facesense.errors import ConfigError
from facesense.queue import CONTROL_QUEUE, INFERENCE_QUEUE, TRAINING_QUEUE
from facesense.state import redis_keys
from facesense.state.records import JobRecords
from facesense.state.scheduler import Scheduler
from facesense.state.status import JobStatus

MODES = ("public", "key", "off")
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
JOB_TYPES = ("classify", "train")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class QueueCollector:
    """Queue depth per Celery queue and jobs by status, read from Redis on each scrape."""

    def __init__(self, jobs: JobRecords, sched: Scheduler):
        self.redis, self.sched = jobs.redis, sched

    def collect(self):
        """The metric families (only facesense_redis_up 0 while Redis does not answer)."""
        up = GaugeMetricFamily("facesense_redis_up", "1 if Redis answered this scrape")
        try:
            families = self._read()
        except redis_lib.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(INFERENCE_QUEUE).llen(TRAINING_QUEUE).llen(CONTROL_QUEUE)
            pipe.smembers(redis_keys.ACTIVE).hgetall(redis_keys.FINISHED_COUNTS)
            inference, training, control, active, finished = pipe.execute()
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in active:
                pipe.hmget(redis_keys.job(job_id.decode()), "type", "status")
            fields = pipe.execute()
        depth = GaugeMetricFamily("facesense_queue_depth", "Tasks waiting in a Celery queue "
                                  "(LLEN of its Redis list)", labels=["queue"])
        depth.add_metric([INFERENCE_QUEUE], inference)
        depth.add_metric([TRAINING_QUEUE], training)
        depth.add_metric([CONTROL_QUEUE], control)
        waiting = GaugeMetricFamily("facesense_shards_waiting", "Shards registered with the "
                                    "scheduler and not yet started, over all jobs: the backlog "
                                    "to scale scoring workers on")
        waiting.add_metric([], self.sched.waiting())
        live = {(t, s): 0 for t in JOB_TYPES for s in (JobStatus.QUEUED, JobStatus.RUNNING)}
        for kind, status in fields:
            if kind and status:  # a record Redis forgot leaves its id behind until swept
                key = (json.loads(kind), json.loads(status))  # record fields are JSON
                live[key] = live.get(key, 0) + 1
        jobs = GaugeMetricFamily("facesense_jobs", "Jobs not finished yet, by type and status",
                                 labels=["type", "status"])
        for (kind, status), n in sorted(live.items()):
            jobs.add_metric([kind, status], n)
        ended = {(t, s.value): 0 for t in JOB_TYPES for s in JobStatus if s.finished}
        for name, n in finished.items():
            kind, _, status = name.decode().partition(":")
            ended[(kind, status)] = int(n)
        done = CounterMetricFamily("facesense_jobs_finished", "Jobs that ended, by type and "
                                   "final status (counted in Redis since it was created)",
                                   labels=["type", "status"])
        for (kind, status), n in sorted(ended.items()):
            done.add_metric([kind, status], n)
        return [depth, waiting, jobs, done]


def install(app: Flask) -> None:
    """Count every request and serve /metrics, as FACESENSE_API_METRICS says (before auth, so
    requests it refuses are timed too)."""
    s = app.extensions[EXTENSION]
    mode = s.settings.api_metrics
    if mode not in MODES:
        raise ConfigError(f"FACESENSE_API_METRICS={mode!r}: use public, key or off")
    if mode == "off":
        return
    registry = CollectorRegistry()  # one per app: tests build several apps in one process
    requests = Counter("facesense_http_requests", "HTTP requests by method, route and status",
                       ["method", "route", "status"], registry=registry)
    latency = Histogram("facesense_http_request_duration_seconds", "Seconds to answer a "
                        "request (until the response starts, for streamed CSV)",
                        ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)
    queue = QueueCollector(s.jobs, s.sched)
    registry.register(queue)
    app.extensions["facesense_metrics"] = (registry, queue)

    @app.before_request
    def start_timer():
        g.metrics_start = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        method = request.method if request.method in METHODS else "other"  # bounded labels
        route = request.url_rule.rule if request.url_rule else "unmatched"
        requests.labels(method, route, str(response.status_code)).inc()
        if "metrics_start" in g:
            latency.labels(method, route).observe(time.perf_counter() - g.metrics_start)
        return response

    def metrics():
        """The metrics in Prometheus text format."""
        return serve()

    bp = Blueprint("metrics", __name__)  # a view per app: public or not is this app's setting
    bp.add_url_rule("/metrics", "metrics", public(metrics) if mode == "public" else metrics,
                    methods=["GET"])
    app.register_blueprint(bp)


def serve() -> Response:
    """This app's registry in Prometheus text format (0.0.4, which every scraper reads)."""
    registry, queue = current_app.extensions["facesense_metrics"]
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # gunicorn: sum every worker process's counts
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(queue)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def openapi_paths() -> dict:
    """/metrics for /openapi.json (api/openapi/ merges it in when the route is served)."""
    from api.openapi.builders import op

    open_ = services().settings.api_metrics == "public"
    operation = op("Prometheus metrics (text format): requests, latency, queue depth, jobs",
                   200, {"type": "string"}, open_=open_)
    operation["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return {"/metrics": {"get": operation}}
