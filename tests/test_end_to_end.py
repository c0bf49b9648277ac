"""Scoring end to end through the API, Redis, a real Celery worker and object storage."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.conftest import BUCKET, wait_for_job
from tests.imagegen import make_folder, upload_folder

pytestmark = pytest.mark.slow

N_IMAGES = 150  # + 3 corrupt: 3 shards of 64 (what matters is several shards, not the count)


@pytest.fixture(scope="module")
def folder(base_dir):
    """150 generated images (JPEG/PNG, 64-2000 px, RGB/L/RGBA) + 3 corrupt, in two groups."""
    root = base_dir / "campaign"
    counts = make_folder(root, N_IMAGES)
    return root, counts


def check_results(client, record: dict, counts: dict[str, int]) -> list[dict]:
    """The assertions both sources share: a row per image, 3 errors, a summary per group."""
    total = sum(counts.values())
    assert record["status"] == "succeeded", record
    assert record["progress"]["total"] == total == N_IMAGES + 3
    assert record["progress"]["done"] == total
    assert record["progress"]["failed"] == 3
    assert record["progress"]["shards"] >= 3  # merged from several shards
    rows, offset = [], 0
    while offset is not None:
        page = client.get(f"/v1/jobs/{record['id']}/results?offset={offset}&limit=100").get_json()
        rows += page["rows"]
        offset = page["next_offset"]
    assert len(rows) == total
    assert len({r["image"] for r in rows}) == total  # every image exactly once
    errors = {r["image"].split("/")[-1]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"truncated.jpg", "notes.png", "empty.jpeg"}
    assert "empty file" in errors["empty.jpeg"]
    for r in rows:
        if not r["error"]:
            assert set(r["probs"]) == {"happy", "sad"}
            assert abs(sum(r["probs"].values()) - 1) < 1e-4
            assert r["label"] == max(r["probs"], key=r["probs"].get)
            assert r["confidence"] == r["probs"][r["label"]]
    summary = record["summary"]
    assert set(summary["groups"]) == set(counts)
    for group, n in counts.items():
        g = summary["groups"][group]
        assert g["images"] == n
        group_rows = [r for r in rows if r["group"] == group and not r["error"]]
        assert g["labels"]["happy"]["count"] == sum(r["label"] == "happy" for r in group_rows)
        shares = sum(v["share"] for v in g["labels"].values())
        assert abs(shares - 1) < 1e-4
    assert summary["overall"]["failed"] == 3
    return rows


def test_local_folder_job_scores_every_image_once(client, worker, folder, model_version):
    root, counts = folder
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(root)})
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["status"] == "queued"
    assert job["model_version"] == model_version["version"]
    record = wait_for_job(client, job["id"])
    rows = check_results(client, record, counts)
    # A random-init version measured nothing against fp32: the worker keeps fp32 and says why
    assert (record["precision"], record["precision_reason"]) == (
        "fp32", "fp32: the version records no agreement with fp32")

    csv_resp = client.get(f"/v1/jobs/{job['id']}/results?format=csv")
    assert csv_resp.status_code == 200 and csv_resp.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(csv_resp.get_data(as_text=True))))
    assert len(table) == len(rows)
    assert list(table[0]) == ["image", "group", "label", "confidence", "p_happy", "p_sad",
                              "error"]


def test_s3_prefix_job_scores_every_image_once(client, worker, folder, s3, unique):
    root, counts = folder
    upload_folder(s3, BUCKET, f"inputs/{unique}", root)
    resp = client.post("/v1/jobs", json={"type": "classify", "source": f"s3://{BUCKET}/inputs/{unique}"})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"])
    check_results(client, record, counts)
    # The final record and results are in object storage too, so history outlives Redis.
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key=f"store/jobs/{record['id']}/job.json")
                        ["Body"].read())
    assert stored["status"] == "succeeded" and stored["total"] == N_IMAGES + 3
    for name in ("results.jsonl", "results.csv", "summary.json"):
        assert record["results"][name].startswith(f"s3://{BUCKET}/store/jobs/{record['id']}/")
