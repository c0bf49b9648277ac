"""What a worker process needs, built once per process: settings, store, job state, sources.

Torch-free: the control worker (plans, finalisers, webhooks) runs on this alone; scoring
workers add a device and models to it (worker.models).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facesense import redisconn
from facesense.errors import ConfigError
from facesense.inputs.netguard import allowed_networks
from facesense.inputs.scopes import scoped_settings
from facesense.inputs.sources import open_source
from facesense.outputs.webhooks import DELIVER as WEBHOOK
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
    models: Any = None  # a worker.models.ModelCache where shards are scored
    faces: Any = None  # a worker.models.FaceCache there too
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


def build_context(settings: Settings, enqueue: Callable[[str, list], None],
                  scoring: bool = True) -> Context:
    """Wire a Context from settings; scoring=False leaves torch and the models out."""
    store = store_from_settings(settings)
    redis = redisconn.connect(settings, health_check_interval=30)
    jobs = JobRecords(redis, store, settings.job_ttl_s,  # every final status queues its webhook
                      on_finished=lambda job_id: enqueue(WEBHOOK, [job_id]))
    ctx = Context(settings=settings, store=store, jobs=jobs,
                  shards=ShardBook(redis, settings.job_ttl_s), leases=Leases(redis),
                  sched=Scheduler(redis, settings.job_ttl_s, 4 * settings.lease_ttl_s,
                                  settings.queue_depth),
                  registry=Registry(store), sources=SourceCache(settings, store), enqueue=enqueue)
    if not scoring:
        return ctx
    from worker.models import add_models  # here, not above: the control worker never loads torch

    return add_models(ctx)
