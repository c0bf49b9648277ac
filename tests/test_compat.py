"""A store written by the release before the restructure (0.1) is still read the same way."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import redis
import torch
from PIL import Image

from api import create_app
from facesense.outputs.results import read_page, shard_rows
from facesense.outputs.thumbnails import thumb_key
from facesense.registry import Registry
from facesense.state.records import JobRecords
from facesense.storage import LocalStore, layout
from runtime.network import load_model
from runtime.preprocess import preprocess
from runtime.serving import LoadedModel, forward

FIXTURE = Path(__file__).parent / "data" / "store-0.1.tar.xz"
JOB, VERSION = "01a2273eb6685bbbcf5db271", "v-old-zero"  # what the 0.1 release wrote


@pytest.fixture(scope="module")
def old_store(tmp_path_factory) -> LocalStore:
    """The 0.1 store, unpacked: one scored job (10 images, 1 corrupt) and one model version."""
    root = tmp_path_factory.mktemp("store-0.1")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(root, filter="data")
    return LocalStore(root)


def test_the_registry_reads_the_old_versions_aliases_and_weights(old_store):
    registry = Registry(old_store)
    assert [m["version"] for m in registry.versions()] == [VERSION]
    aliases = registry.aliases()
    assert set(aliases) == {"production", "staging"}
    assert aliases["production"]["history"][0]["to"] == VERSION
    manifest = registry.resolve("production")
    assert manifest["classes"] == ["happy", "sad"]
    model = load_model(manifest, registry.weights(manifest), torch.device("cpu"))  # checksum too
    loaded = LoadedModel(VERSION, manifest["classes"], manifest["preprocess"], model,
                         torch.device("cpu"), "fp32")
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 120, 90)).save(buf, "JPEG")
    probs = forward(loaded, preprocess(buf.getvalue(), manifest["preprocess"])[None])
    assert probs.shape == (1, 2) and abs(probs.sum() - 1) < 1e-5  # zero weights: 0.5 / 0.5


def test_the_old_job_record_results_shards_and_thumbnails_are_found(old_store, redis_url):
    jobs = JobRecords(redis.Redis.from_url(redis_url), old_store)
    record = jobs.get(JOB)  # Redis never held it here: the archived job.json
    assert record["status"] == "succeeded" and (record["total"], record["failed"]) == (10, 1)
    rows = read_page(old_store, JOB, 0, 100)
    assert len(rows) == 10 and sum(bool(r["error"]) for r in rows) == 1
    assert list(shard_rows(old_store, JOB, range(record["shards"]))) == rows
    assert old_store.exists(layout.job_key(JOB, layout.RESULTS_CSV))
    assert all(old_store.exists(thumb_key(JOB, r["image"])) for r in rows if not r["error"])
    for index in range(record["shards"]):
        assert old_store.exists(layout.plan_key(JOB, index))


def test_the_api_serves_the_old_store_on_the_same_routes(old_store, settings):
    client = create_app(settings.replace(store=str(old_store.root))).test_client()
    job = client.get(f"/v1/jobs/{JOB}").get_json()
    assert job["status"] == "succeeded" and job["progress"]["done"] == 10
    page = client.get(f"/v1/jobs/{JOB}/results?limit=4").get_json()
    assert len(page["rows"]) == 4 and page["next_offset"] == 4 and page["total"] == 10
    csv = client.get(f"/v1/jobs/{JOB}/results?format=csv")
    assert csv.status_code == 200 and csv.get_data(as_text=True).count("\n") == 11
    models = client.get("/v1/models").get_json()
    assert [v["version"] for v in models["versions"]] == [VERSION]
    assert models["aliases"]["production"]["version"] == VERSION
