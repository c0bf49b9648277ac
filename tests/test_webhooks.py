"""Webhooks: a finished job's record POSTed to its callback URL, signed, retried with backoff."""

from __future__ import annotations

import io
import json
import time

import pytest
import redis

from api import create_app
from facesense.outputs.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    backoff,
    body_of,
    deliver,
    sign,
    verify,
)
from facesense.settings import Settings
from facesense.state.records import JobRecords
from facesense.state.status import JobStatus
from facesense.storage import store_from_settings
from tests.conftest import wait_for_job, wait_for_no_messages
from tests.imagegen import make_folder
from tests.loopback import Loopback


@pytest.fixture(scope="module")
def receiver():
    """A loopback webhook receiver (127.0.0.1 is in the test settings' allowed networks)."""
    with Loopback() as srv:
        yield srv


def wait_for_webhook(client, job_id: str, timeout: float = 30) -> dict:
    """Poll until the job's webhook is delivered or given up; returns the job record."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/v1/jobs/{job_id}").get_json()
        if (record.get("webhook") or {}).get("status") in ("delivered", "failed"):
            return record
        assert time.monotonic() < deadline, f"no webhook outcome after {timeout}s: {record}"
        time.sleep(0.1)


def assert_signed(seen, secret: str) -> dict:
    """The request's signature verifies over its raw body; returns the parsed body."""
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert verify(secret, seen.body, headers[TIMESTAMP_HEADER.lower()],
                  headers[SIGNATURE_HEADER.lower()])
    return json.loads(seen.body)


def test_signatures_verify_only_for_the_same_secret_body_and_a_fresh_timestamp():
    body, stamp = b'{"status":"succeeded"}', str(int(time.time()))
    signature = sign("s3cret", stamp, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify("s3cret", body, stamp, signature)
    assert not verify("other", body, stamp, signature)
    assert not verify("s3cret", body + b" ", stamp, signature)
    assert not verify("s3cret", body, str(int(stamp) + 1), signature)  # the stamp is signed
    assert not verify("s3cret", body, stamp, signature, at=int(stamp) + 301)  # a replay
    assert not verify("s3cret", body, "yesterday", signature)


def test_backoff_doubles_up_to_a_cap():
    s = Settings(webhook_backoff_s=5)
    assert [backoff(s, n) for n in (1, 2, 3, 4, 8, 20)] == [5, 10, 20, 40, 600, 600]


def test_callback_urls_are_checked_at_submit(client, base_dir, settings):
    def post(url, c=client):
        return c.post("/v1/jobs", json={"type": "classify", "source": str(base_dir),
                                        "callback_url": url})

    for url, reason in [("ftp://127.0.0.1/hook", "scheme not allowed: ftp"),
                        ("http://169.254.169.254/hook", "blocked address 169.254.169.254"),
                        ("http://127.0.0.2:9/hook", "blocked address 127.0.0.2"),
                        ("not a url", "scheme not allowed: (none)")]:
        resp = post(url)
        message = resp.get_json()["error"]["message"]
        assert resp.status_code == 400 and message.startswith("callback_url refused"), message
        assert reason in message
    upload = client.post("/v1/jobs", content_type="multipart/form-data", data={
        "type": "classify", "callback_url": "http://169.254.169.254/hook",
        "files": (io.BytesIO(b"x"), "a.jpg")})
    assert upload.status_code == 400 and "blocked address" in upload.get_json()["error"]["message"]
    unsigned = create_app(settings.replace(webhook_secret="")).test_client()
    resp = post("http://127.0.0.1:9/hook", unsigned)
    assert resp.status_code == 400 and "FACESENSE_WEBHOOK_SECRET" in resp.get_json()["error"][
        "message"]


def test_a_finished_job_posts_one_signed_record(client, worker, receiver, settings, base_dir,
                                                unique):
    folder = base_dir / f"hook-{unique}"
    make_folder(folder, 4, max_side=200, corrupt=False)
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(folder),
                                         "callback_url": receiver.url(f"/hook/{unique}")})
    assert resp.status_code == 202, resp.get_json()
    job = wait_for_job(client, resp.get_json()["id"])
    record = wait_for_webhook(client, job["id"])
    wait_for_no_messages(settings.redis_url, job["id"])  # a duplicate would have been sent
    (seen,) = receiver.requests_to(f"/hook/{unique}")
    body = assert_signed(seen, settings.webhook_secret)
    assert body["id"] == job["id"] and body["status"] == "succeeded"
    assert body["progress"]["total"] == body["progress"]["done"] == 4
    assert body["summary"]["overall"]["images"] == 4 and "webhook" not in body
    # the statistics travel with it: intervals and the comparisons, as on the record
    assert body["summary"]["comparisons"] == job["summary"]["comparisons"]
    happy = body["summary"]["groups"]["variant_a"]["labels"]["happy"]
    assert happy["ci95"] == job["summary"]["groups"]["variant_a"]["labels"]["happy"]["ci95"]
    assert len(happy["ci95"]) == 2
    assert seen.headers["X-FaceSense-Event"] == "job.succeeded"
    assert record["webhook"] | {"at": None} == {
        "url": receiver.url(f"/hook/{unique}"), "status": "delivered", "attempts": 1,
        "http_status": 200, "error": None, "at": None}
    stored = json.loads(store_from_settings(settings).get(f"jobs/{job['id']}/job.json"))
    assert stored["webhook"]["status"] == "delivered"  # the archived record says so too


def test_a_failing_receiver_gets_retries_with_growing_gaps(client, worker, receiver, settings,
                                                           base_dir, unique):
    """500, 500, then 200: three signed POSTs of the same body, at least 1 s then 2 s apart."""
    # two classes with an image each: the API refuses a dataset without (never trained here)
    make_folder(base_dir / "train-hook", 2, groups=("happy", "sad"), max_side=64, corrupt=False)
    receiver.post_statuses[f"/flaky/{unique}"] = [500, 500]
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": str(base_dir / "train-hook"),
                                         "callback_url": receiver.url(f"/flaky/{unique}")})
    assert resp.status_code == 202, resp.get_json()
    job_id = resp.get_json()["id"]
    # Cancelled while queued (no training worker runs here): the API sets this final status.
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    record = wait_for_webhook(client, job_id)
    seen = receiver.requests_to(f"/flaky/{unique}")
    assert len(seen) == 3
    bodies = [assert_signed(s, settings.webhook_secret) for s in seen]
    assert all(b == bodies[0] for b in bodies) and bodies[0]["status"] == "cancelled"
    # Countdowns are lower bounds (a loaded machine only delays a retry, never hastens it):
    # the second gap is at least twice the backoff (1 s, then 2 s).
    first, second = seen[1].at - seen[0].at, seen[2].at - seen[1].at
    assert first >= 0.9 and second >= 1.8, (first, second)
    assert record["webhook"]["status"] == "delivered" and record["webhook"]["attempts"] == 3


def test_delivery_gives_up_and_says_why(redis_url, settings, receiver, unique):
    """The plain function: 5xx retries until the last attempt; 4xx and blocked addresses stop."""
    jobs = JobRecords(redis.Redis.from_url(redis_url), store_from_settings(settings))
    s = settings.replace(webhook_max_attempts=2)

    def finished_job(url: str) -> str:
        job_id = jobs.create("classify", callback_url=url)["id"]
        jobs.set_status(job_id, JobStatus.FAILED, error="for the test")
        return job_id

    receiver.post_statuses[f"/down/{unique}"] = [503, 503]
    down = finished_job(receiver.url(f"/down/{unique}"))
    assert deliver(jobs, s, down, 1) == 1
    assert jobs.get(down)["webhook"]["status"] == "retrying"
    assert deliver(jobs, s, down, 2) is None
    assert jobs.get(down)["webhook"] | {"at": None} == {
        "url": receiver.url(f"/down/{unique}"), "status": "failed", "attempts": 2,
        "http_status": 503, "error": "http 503", "at": None}

    receiver.post_statuses[f"/gone/{unique}"] = [410]
    gone = finished_job(receiver.url(f"/gone/{unique}"))
    assert deliver(jobs, s, gone, 1) is None and jobs.get(gone)["webhook"]["error"] == "http 410"

    blocked = finished_job(receiver.url("/hook", host="127.0.0.2"))
    assert deliver(jobs, s, blocked, 1) is None
    assert jobs.get(blocked)["webhook"]["error"] == "blocked address 127.0.0.2"
    assert len(receiver.requests_to(f"/down/{unique}")) == 2
    assert body_of(jobs.get(down)) == body_of(jobs.get(down) | {"webhook": {"x": 1}})
