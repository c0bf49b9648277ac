"""Wall time of one scoring job on the embedded stack: `python -m bench.job_walltime [N]`.

Starts a private redis-server and one worker (local store), generates N images (JPEG and PNG,
64-2000 px, RGB / grayscale / RGBA) plus 3 corrupt files in two sub-folders, submits the folder
through the API and prints the time from submission to `succeeded`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from api import create_app
from cli.launcher import start_redis, start_workers, stop
from facesense.queue import make_celery
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.storage import store_from_settings
from tests.imagegen import make_folder


def main(n: int = 300) -> dict:
    """Run the job once and return the figures."""
    import torch

    from runtime.network import build_alexnet, register_state

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis_proc, url = start_redis(base / "redis")
        settings = Settings.from_env(redis_url=url, store=str(base / "store"),
                                     allowed_roots=(str(base),))
        torch.manual_seed(0)
        registry = Registry(store_from_settings(settings))
        version = register_state(registry, build_alexnet(2).state_dict(), ["happy", "sad"])
        registry.promote(version["version"], "production", by="bench")
        make_folder(base / "images", n)
        workers = start_workers(settings, 1)
        try:
            celery = make_celery(settings)
            while not celery.control.ping(timeout=1):
                time.sleep(0.2)
            client = create_app(settings).test_client()
            start = time.perf_counter()
            job = client.post("/v1/jobs", json={"type": "classify",
                                                "source": str(base / "images")}).get_json()
            while (record := client.get(f"/v1/jobs/{job['id']}").get_json())["status"] in (
                    "queued", "running"):
                time.sleep(0.05)
            wall = time.perf_counter() - start
        finally:
            stop(workers)
            stop([redis_proc])
    figures = {"images": record["progress"]["total"], "failed": record["progress"]["failed"],
               "status": record["status"], "wall_s": round(wall, 2),
               "images_per_s": round(record["progress"]["total"] / wall, 1),
               "shard_size": settings.shard_size, "device": record.get("device"),
               "precision": record.get("precision")}
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
