"""Cancelling a running scoring job: queued shards are skipped, the job ends cancelled."""

from __future__ import annotations

import time

import pytest

from tests.imagegen import make_folder

pytestmark = pytest.mark.slow


def test_cancel_a_running_scoring_job(client, worker, base_dir, unique):
    folder = base_dir / f"cancel-{unique}"
    make_folder(folder, 320, max_side=500, corrupt=False)  # 5 shards of 64
    job_id = client.post("/v1/jobs", json={"type": "classify",
                                           "source": str(folder)}).get_json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job_id}").get_json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    resp = client.post(f"/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    time.sleep(6)  # long enough for the remaining shards to be skipped, or (wrongly) scored
    record = client.get(f"/v1/jobs/{job_id}").get_json()
    assert record["status"] == "cancelled" and record["error"] == "cancelled by request"
    assert record["progress"]["done"] < record["progress"]["total"] == 320
    assert client.get(f"/v1/jobs/{job_id}/results").status_code == 409
