"""What a worker process needs, built once per process: settings, store, job state, sources.

Torch-free: the control worker (plans, finalisers, webhooks) runs on this alone; scoring
workers add a device and models to it (worker.model_cache).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from facesense import redisconn
from facesense.errors import ConfigError
from facesense.inputs.netguard import allowed_networks
from facesense.inputs.scopes import scoped_settings
from facesense.inputs.sources import open_source
from facesense.logs import setup_logging
from facesense.queue import make_celery, wire
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.state.leases import Leases
from facesense.state.records import JobRecords
from facesense.state.scheduler import Scheduler
from facesense.state.shards import ShardBook
from facesense.storage import Store, store_from_settings


class SourceCache:
    """Each job's source opened once per process: an S3 source keeps its client across shards."""

    def __init__(self, settings: Settings, store: Store, size: int = 8):
        self.settings, self.store, self.size = settings, store, size
        self._sources: OrderedDict[str, Store] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str, scope: dict | None = None) -> Store:
        """The source a job's URL names, opened on first use; a scoped key's job (its record's
        scope) reads local files under its key's roots, checked as each file is opened."""
        name = url + (json.dumps(scope, sort_keys=True) if scope else "")
        with self._lock:
            if name not in self._sources:
                self._sources[name] = open_source(url, scoped_settings(self.settings, scope),
                                                  self.store)
                while len(self._sources) > self.size:
                    self._sources.popitem(last=False)
            self._sources.move_to_end(name)
            return self._sources[name]


@dataclass
class Context:
    """A worker's dependencies, passed to the plain job functions."""

    settings: Settings
    store: Store
    jobs: JobRecords
    shards: ShardBook
    leases: Leases
    sched: Scheduler
    registry: Registry
    sources: SourceCache
    enqueue: Callable[[str, list], None]  # send a task by name with positional args
    models: Any = None  # a worker.model_cache.ModelCache where shards are scored
    faces: Any = None  # a worker.model_cache.FaceCache there too
    batch_size: int = 0
    threads: int = 0
    decoder: str = "cpu"
    serves: frozenset[str] = frozenset()  # the queues this worker consumes (worker.tasks)


def check_settings(settings: Settings) -> None:
    """Fail fast on settings no worker can run with (Redis, store URL, networks)."""
    if not redisconn.configured(settings):
        raise ConfigError("FACESENSE_REDIS_URL (or FACESENSE_REDIS_SENTINELS) is not set: "
                          "a worker needs the shared Redis")
    if settings.redis_sentinels:
        redisconn.sentinel_addresses(settings)  # a malformed entry fails here, not at first use
    store_from_settings(settings)
    allowed_networks(settings.url_allow_networks)


def boot(*checks: Callable[[Settings], None]) -> tuple[Settings, Celery]:
    """A worker process's start: its settings from the environment, logging, the checks that
    stop a bad setting at start rather than every task later, and its Celery app."""
    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)
    for check in (check_settings, *checks):
        check(settings)
    return settings, make_celery(settings)


def build_context(settings: Settings, enqueue: Callable[[str, list], None]) -> Context:
    """Wire a torch-free Context from settings (a scoring worker then gives it its models:
    worker.model_cache.add_models)."""
    core = wire(settings, enqueue, health_check_interval=30)
    return Context(settings=settings, store=core.store, jobs=core.jobs, shards=core.shards,
                   leases=core.leases, sched=core.sched, registry=core.registry,
                   sources=SourceCache(settings, core.store), enqueue=enqueue)
