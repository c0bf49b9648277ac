"""What a worker process needs, built once per process: settings, store, job state, models."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis as redis_lib
import torch

from facesense.errors import ConfigError
from facesense.inputs.netguard import allowed_networks
from facesense.inputs.sources import open_source
from facesense.outputs.webhooks import DELIVER as WEBHOOK
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.state.leases import Leases
from facesense.state.records import JobRecords
from facesense.state.shards import ShardBook
from facesense.storage import Store, store_from_settings
from runtime.device import default_batch_size, default_threads, resolve_device, resolve_precision
from runtime.gpu_decode import DECODERS, resolve_decoder
from runtime.network import load_model
from runtime.serving import LoadedModel
from worker import metrics


class ModelCache:
    """Loaded model versions by name; a version is immutable, so a cached copy never goes stale."""

    def __init__(self, registry: Registry, device: torch.device, precision: str, size: int = 2):
        self.registry, self.device, self.precision, self.size = registry, device, precision, size
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str) -> LoadedModel:
        """The loaded version, loading (and checksum-verifying) it on first use."""
        with self._lock:
            if version in self._models:
                self._models.move_to_end(version)
                return self._models[version]
            manifest = self.registry.manifest(version)
            with metrics.MODEL_LOAD.time():
                model = load_model(manifest, self.registry.weights(manifest), self.device)
            loaded = LoadedModel(version, manifest["classes"], manifest["preprocess"], model,
                                 self.device, self.precision)
            self._models[version] = loaded
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return loaded


class SourceCache:
    """Each job's source opened once per process: an S3 source keeps its client across shards."""

    def __init__(self, settings: Settings, store: Store, size: int = 8):
        self.settings, self.store, self.size = settings, store, size
        self._sources: OrderedDict[str, Store] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> Store:
        """The source a job's URL names, opened on first use."""
        with self._lock:
            if url not in self._sources:
                self._sources[url] = open_source(url, self.settings, self.store)
                while len(self._sources) > self.size:
                    self._sources.popitem(last=False)
            self._sources.move_to_end(url)
            return self._sources[url]


@dataclass
class Context:
    """A worker's dependencies, passed to the plain job functions."""

    settings: Settings
    store: Store
    jobs: JobRecords
    shards: ShardBook
    leases: Leases
    registry: Registry
    models: ModelCache
    sources: SourceCache
    enqueue: Callable[[str, list], None]  # send a task by name with positional args
    batch_size: int = 0
    threads: int = 0
    decoder: str = "cpu"


def check_settings(settings: Settings) -> None:
    """Fail fast on settings a worker can't run with (device, precision, store URL, Redis)."""
    if not settings.redis_url:
        raise ConfigError("FACESENSE_REDIS_URL is not set: a worker needs the shared Redis")
    resolve_precision(settings.precision, resolve_device(settings.device))
    if settings.decoder not in DECODERS:
        raise ConfigError(f"FACESENSE_DECODER={settings.decoder!r}: use auto, cpu or gpu")
    store_from_settings(settings)
    allowed_networks(settings.url_allow_networks)


def build_context(settings: Settings, enqueue: Callable[[str, list], None]) -> Context:
    """Wire a Context from settings."""
    store = store_from_settings(settings)
    registry = Registry(store)
    redis = redis_lib.Redis.from_url(settings.redis_url, health_check_interval=30)
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    jobs = JobRecords(redis, store, settings.job_ttl_s,  # every final status queues its webhook
                      on_finished=lambda job_id: enqueue(WEBHOOK, [job_id]))
    return Context(settings=settings, store=store, jobs=jobs,
                   shards=ShardBook(redis, settings.job_ttl_s), leases=Leases(redis),
                   registry=registry, models=ModelCache(registry, device, precision),
                   sources=SourceCache(settings, store), enqueue=enqueue,
                   batch_size=settings.batch_size or default_batch_size(device),
                   threads=settings.decode_threads or default_threads(),
                   decoder=resolve_decoder(settings.decoder, device))
