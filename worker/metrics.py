"""A worker process's Prometheus metrics, served on FACESENSE_WORKER_METRICS_PORT (0: not served).

One registry per process: a solo-pool worker is one process, so its port shows all its work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
IMAGES = Counter("facesense_worker_images_scored", "Images scored (rows with a label)",
                 registry=REGISTRY)
FAILURES = Counter("facesense_worker_image_failures", "Images that became error rows "
                   "(unreadable, too large, not an image, fetch failed)", registry=REGISTRY)
BATCH = Histogram("facesense_worker_batch_size", "Images per forward pass",
                  buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=REGISTRY)
SECONDS = Counter("facesense_worker_scoring_seconds", "Seconds spent scoring shards (fetch, "
                  "decode and forward); rate(images) / rate(seconds) = images/s while busy",
                  registry=REGISTRY)
RATE = Gauge("facesense_worker_images_per_second", "Images (scored + failed) per second over "
             "the last shard", registry=REGISTRY)
MODEL_LOAD = Histogram("facesense_worker_model_load_seconds", "Seconds to fetch, verify and load "
                       "a model version", buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                       registry=REGISTRY)

_seen = 0  # images through record_batch in this process, for the per-shard rate
_lock = threading.Lock()


def record_batch(scored: int, failed: int) -> None:
    """Count one batch: scored images went through the model, failed ones are error rows."""
    global _seen
    IMAGES.inc(scored)
    FAILURES.inc(failed)
    if scored:
        BATCH.observe(scored)
    with _lock:
        _seen += scored + failed


@contextmanager
def shard_meter() -> Iterator[None]:
    """Time one shard's scoring: adds to the seconds counter and sets the images/s gauge."""
    start, before = time.perf_counter(), _seen
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        SECONDS.inc(elapsed)
        if elapsed > 0 and _seen > before:
            RATE.set((_seen - before) / elapsed)


def _gpu_gauge() -> None:
    """GPU memory allocated by this process's tensors, per visible device (CUDA only)."""
    gauge = Gauge("facesense_worker_gpu_memory_allocated_bytes", "GPU memory held by tensors "
                  "(torch.cuda.memory_allocated)", ["device"], registry=REGISTRY)
    for index in range(torch.cuda.device_count()):
        gauge.labels(str(index)).set_function(lambda i=index: torch.cuda.memory_allocated(i))


_served = False


def serve(port: int) -> bool:
    """Serve /metrics on port (all interfaces, for a scraper in another container); once."""
    global _served
    if not port or _served:
        return False
    try:
        start_http_server(port, registry=REGISTRY)
    except OSError as e:  # a port taken must not stop the worker from working
        log.warning("worker metrics: cannot listen on port %d: %s", port, e)
        return False
    if torch.cuda.is_available():
        _gpu_gauge()
    _served = True
    log.info("worker metrics on http://0.0.0.0:%d/metrics", port)
    return True
