"""A worker for bench.controlplane: the real Celery worker, its real Redis and store traffic,
with a stand-in scorer that takes a fixed time per batch (as a GPU would) and counters of
store requests and scheduler picks written to a JSON file.

python -m bench.cp_worker STATS.json IMAGES_PER_S -- <celery worker arguments>
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time
from collections import Counter
from types import SimpleNamespace

PAGE = 1000  # keys per S3 list request: local listings are counted in the same pages

counts: Counter = Counter()
picks: list[float] = []
installed = False
_lock = threading.Lock()


def count(name: str, n: int = 1) -> None:
    with _lock:
        counts[name] += n


def _counted(cls, kind: str) -> None:
    """Count each store call by method; a listing counts one request per PAGE keys."""
    for name in ("get", "put", "put_stream", "open", "exists", "delete"):
        def wrap(method, name=name):
            def call(self, *args, **kwargs):
                count(f"{kind}.{name}")
                return method(self, *args, **kwargs)
            return call
        setattr(cls, name, wrap(getattr(cls, name)))
    for name in ("list", "folders"):
        def wrap_list(method, name=name):
            def call(self, *args, **kwargs):
                n = 0
                for item in method(self, *args, **kwargs):
                    n += 1
                    yield item
                count(f"{kind}.{name}", max(1, -(-n // PAGE)))
            return call
        setattr(cls, name, wrap_list(getattr(cls, name)))


def install(images_per_s: float | None) -> None:
    """Count store requests (and S3's, by operation) and pick latency; with images_per_s, put
    the stand-in scorer and a model that is never loaded in the worker's place."""
    global installed
    if installed:
        return
    installed = True
    import botocore.client

    from facesense.state.scheduler import Scheduler
    from facesense.storage.local import LocalStore
    from facesense.storage.s3 import S3Store

    _counted(LocalStore, "local")
    _counted(S3Store, "s3store")
    api_call = botocore.client.BaseClient._make_api_call

    def s3_call(self, operation, params):
        count(f"s3.{operation}")  # what S3 bills: one request each
        return api_call(self, operation, params)

    botocore.client.BaseClient._make_api_call = s3_call
    pick = Scheduler.pick

    def timed_pick(self):
        start = time.perf_counter()
        try:
            return pick(self)
        finally:
            with _lock:
                picks.append(time.perf_counter() - start)

    Scheduler.pick = timed_pick
    if images_per_s:
        _stand_in(images_per_s)


def _stand_in(images_per_s: float) -> None:
    from facesense.outputs.rows import error_row
    from worker import classify, model_cache

    def score(keys, loaded, fetch, *, batch_size, should_stop=lambda: False, thumbs=None, **_):
        keys = list(keys)
        for start in range(0, len(keys), batch_size):
            if start and should_stop():
                return
            batch = keys[start:start + batch_size]
            time.sleep(len(batch) / images_per_s)  # the GPU's time: the images are not read
            for key in batch:
                yield {**error_row(key, None), "label": "happy", "confidence": 0.9,
                       "probs": {"happy": 0.9, "sad": 0.1}}
        if thumbs:
            thumbs.close()

    def get(self, version):
        return SimpleNamespace(version=version, classes=["happy", "sad"], spec={}, faces=None,
                               precision="stand-in", reason="bench.controlplane")

    classify.score = score
    model_cache.ModelCache.get = get


def dump(path: str) -> None:
    with _lock:
        data = {"counts": dict(counts), "picks_s": list(picks)}
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    import os

    os.replace(path + ".tmp", path)


def main() -> None:
    """Install the counters and the stand-in, then run Celery's command line."""
    stats, rate, sep, *celery_args = sys.argv[1:]
    assert sep == "--", "usage: python -m bench.cp_worker STATS.json IMAGES_PER_S -- ARGS"
    install(float(rate) or None)
    atexit.register(dump, stats)

    def flush():
        while True:
            time.sleep(0.5)
            dump(stats)

    threading.Thread(target=flush, daemon=True).start()
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *celery_args]
    celery_main()


if __name__ == "__main__":
    main()
