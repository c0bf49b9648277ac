"""The documented formats, computed here with hashlib/hmac alone (not the code's own helpers):
API keys are configured as the hex SHA-256 of the key; a webhook carries
`X-FaceSense-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
import redis

from api import create_app
from cli.main import main
from facesense.outputs.webhooks import deliver
from facesense.state.records import JobRecords
from facesense.state.status import JobStatus
from facesense.storage import store_from_settings
from tests.loopback import Loopback

SECRET = "contract-secret"


def sha256_hex(text: str) -> str:
    """The README's key hash: hex SHA-256 of the key's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture
def quiet_settings(settings, redis_url):
    """Job records in a Redis database no worker listens on (nothing queued here runs)."""
    db_url = re.sub(r"/\d+$", "/9", redis_url)
    yield settings.replace(redis_url=db_url, webhook_secret=SECRET)
    redis.Redis.from_url(db_url).flushdb()


def test_a_key_configured_as_its_documented_sha256_opens_the_api(settings, model_version):
    key = "fsk_contract-" + "k" * 30
    api = create_app(settings.replace(api_keys=f"carol:{sha256_hex(key)}")).test_client()
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    # a hash of anything else (another key, the key's own bytes un-hashed) opens nothing
    for wrong in (key + "x", key.upper()):
        assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    md5 = hashlib.md5(key.encode()).hexdigest() * 2  # 64 hex digits, the wrong function
    other = create_app(settings.replace(api_keys=f"carol:{md5}")).test_client()
    assert other.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_keys_new_prints_the_sha256_of_the_key_it_prints():
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["keys", "new", "dave"]) == 0
    key = out.getvalue().strip()
    assert f"FACESENSE_API_KEYS=dave:{sha256_hex(key)}" in err.getvalue()


@pytest.fixture
def receiver():
    """A loopback webhook receiver (127.0.0.1 is in the test settings' allowed networks)."""
    with Loopback() as srv:
        yield srv


def finished_job(settings, url: str, status: JobStatus = JobStatus.FAILED) -> tuple[JobRecords, str]:
    """A finished job with a callback URL, in the records deliver() reads."""
    jobs = JobRecords(redis.Redis.from_url(settings.redis_url), store_from_settings(settings))
    job_id = jobs.create("classify", callback_url=url)["id"]
    jobs.set_status(job_id, status, error="for the contract test")
    return jobs, job_id


def test_a_delivery_is_signed_as_documented(quiet_settings, receiver, model_version):
    jobs, job_id = finished_job(quiet_settings, receiver.url("/signed"))
    before = int(time.time())
    assert deliver(jobs, quiet_settings, job_id, 1) is None
    (seen,) = receiver.requests_to("/signed")
    headers = {k.lower(): v for k, v in seen.headers.items()}
    stamp = headers["x-facesense-timestamp"]
    assert re.fullmatch(r"\d+", stamp) and before <= int(stamp) <= time.time() + 1  # unix seconds
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + seen.body,
                        hashlib.sha256).hexdigest()
    assert headers["x-facesense-signature"] == f"sha256={expected}"
    assert headers["x-facesense-event"] == "job.failed"
    assert headers["x-facesense-job"] == job_id
    assert headers["content-type"] == "application/json"
    # The body is the job's public record as the API returns it, without `webhook`
    api = create_app(quiet_settings).test_client()
    record = api.get(f"/v1/jobs/{job_id}").get_json()
    assert json.loads(seen.body) == {k: v for k, v in record.items() if k != "webhook"}
    assert record["webhook"]["status"] == "delivered"


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_timeouts_throttling_and_server_errors_are_retried(quiet_settings, receiver, status):
    jobs, job_id = finished_job(quiet_settings, receiver.url(f"/busy/{status}"))
    receiver.post_statuses[f"/busy/{status}"] = [status]
    s = quiet_settings.replace(webhook_backoff_s=7, webhook_max_attempts=3)
    assert deliver(jobs, s, job_id, 1) == 7  # seconds until the retry (BACKOFF_S)
    assert jobs.get(job_id)["webhook"] | {"at": None} == {
        "url": receiver.url(f"/busy/{status}"), "status": "retrying", "attempts": 1,
        "http_status": status, "error": f"http {status}", "at": None}
    assert deliver(jobs, s, job_id, 2) is None  # the scripted answer is spent: 200
    assert jobs.get(job_id)["webhook"]["status"] == "delivered"


@pytest.mark.parametrize("status", [400, 404, 409, 410])
def test_other_client_errors_are_not_retried(quiet_settings, receiver, status):
    jobs, job_id = finished_job(quiet_settings, receiver.url(f"/no/{status}"))
    receiver.post_statuses[f"/no/{status}"] = [status]
    assert deliver(jobs, quiet_settings, job_id, 1) is None
    assert jobs.get(job_id)["webhook"]["status"] == "failed"
    assert len(receiver.requests_to(f"/no/{status}")) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(quiet_settings, receiver, status):
    jobs, job_id = finished_job(quiet_settings, receiver.url(f"/moved/{status}"))
    receiver.post_statuses[f"/moved/{status}"] = [status]
    receiver.post_headers[f"/moved/{status}"] = {"Location": receiver.url("/elsewhere")}
    assert deliver(jobs, quiet_settings, job_id, 1) is None
    assert jobs.get(job_id)["webhook"] | {"at": None} == {
        "url": receiver.url(f"/moved/{status}"), "status": "failed", "attempts": 1,
        "http_status": status, "error": f"http {status}", "at": None}
    assert receiver.requests_to("/elsewhere") == []  # the Location was never asked for
