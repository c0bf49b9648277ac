"""What a worker process needs, built once per process: settings, store, records, models."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis as redis_lib
import torch

from facesense.errors import ConfigError
from facesense.jobs import JobRecords
from facesense.netguard import allowed_networks
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.store import Store, store_from_settings
from facesense.webhooks import DELIVER as WEBHOOK
from trainer.model import load_model
from worker import metrics
from worker.gpu_decode import DECODERS, resolve_decoder
from worker.inference import (
    LoadedModel,
    default_batch_size,
    default_threads,
    resolve_device,
    resolve_precision,
)


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


@dataclass
class Context:
    """A worker's dependencies, passed to the plain job functions."""

    settings: Settings
    store: Store
    jobs: JobRecords
    registry: Registry
    models: ModelCache
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
                   registry=registry, models=ModelCache(registry, device, precision),
                   enqueue=enqueue,
                   batch_size=settings.batch_size or default_batch_size(device),
                   threads=settings.decode_threads or default_threads(),
                   decoder=resolve_decoder(settings.decoder, device))
