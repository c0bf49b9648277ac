"""Webhooks: a finished job's public record POSTed to its callback URL, signed, retried.

The body is signed with HMAC-SHA256 over "<timestamp>.<raw body>" (FACESENSE_WEBHOOK_SECRET),
so a receiver can check both who sent it and that it is fresh (no replays of old deliveries).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from facesense.errors import BadRequest, FacesenseError
from facesense.errors import backoff as retry_backoff
from facesense.inputs.netguard import FetchError, Limits, Refused, post, vet
from facesense.settings import Settings
from facesense.state.records import JobRecords, dumps, public_record
from facesense.state.status import now

log = logging.getLogger(__name__)

DELIVER = "facesense.webhook.deliver"  # task name: sent by name, runs on the control queue
SIGNATURE_HEADER = "X-FaceSense-Signature"
TIMESTAMP_HEADER = "X-FaceSense-Timestamp"
MAX_DELAY_S = 600  # retries wait at most this long (well under the broker's visibility timeout)


def check_callback_url(url: str, settings: Settings) -> str:
    """A job's callback URL, checked at submit time by the same rules as image URLs (400)."""
    if not settings.webhook_secret:
        raise BadRequest("callback_url needs FACESENSE_WEBHOOK_SECRET to be set on the server")
    if not url.strip():
        raise BadRequest("callback_url must be an http(s) URL")
    try:
        vet(url.strip(), Limits.from_settings(settings).allow)
    except FetchError as e:
        raise BadRequest(f"callback_url refused: {e}") from None
    return url.strip()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: sha256=<hex HMAC of "<timestamp>.<body>">."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, body: bytes, timestamp: str, signature: str, *,
           tolerance_s: float = 300, at: float | None = None) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        age = abs((time.time() if at is None else at) - int(timestamp))
    except (TypeError, ValueError):
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def body_of(record: dict) -> bytes:
    """The delivery body: the public record, without the delivery's own bookkeeping."""
    return dumps(public_record({k: v for k, v in record.items() if k != "webhook"}),
                 separators=(",", ":")).encode()  # strict: a receiver's JSON.parse takes it


def backoff(settings: Settings, attempt: int) -> int:
    """Seconds to wait after failed attempt n (1-based): base, 2x base, 4x base ..."""
    return retry_backoff(attempt, settings.webhook_backoff_s, MAX_DELAY_S)


def deliver(jobs: JobRecords, settings: Settings, job_id: str, attempt: int) -> int | None:
    """One delivery attempt, recorded on the job; returns seconds until a retry, or None."""
    record = jobs.get(job_id)
    url = record.get("callback_url")
    if not url:
        return None
    body = body_of(record)
    stamp = str(int(time.time()))
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(settings.webhook_secret, stamp, body),
               "X-FaceSense-Event": f"job.{record['status']}", "X-FaceSense-Job": job_id}
    code, error, retryable = None, None, True
    try:
        code = post(url, body, headers, Limits.from_settings(settings, max_bytes=0))
        if not 200 <= code < 300:
            error = f"http {code}"
            retryable = code >= 500 or code in (408, 429)  # other answers won't change
    except Refused as e:  # the address rules: no retry will make it acceptable
        error, retryable = str(e), False
    except FacesenseError as e:
        error = str(e)
    again = error is not None and retryable and attempt < settings.webhook_max_attempts
    state = "delivered" if error is None else "retrying" if again else "failed"
    try:  # recording the outcome must not turn a delivered POST into a retried one
        if jobs.exists(job_id):  # Redis may have forgotten a very old job: never recreate it
            jobs.update(job_id, webhook={"url": url, "status": state, "attempts": attempt,
                                         "http_status": code, "error": error, "at": now()})
            if state != "retrying":
                jobs.archive(job_id)
    except Exception as e:
        log.warning("job %s: could not record its webhook outcome: %s", job_id, e)
    log.info("job %s: webhook attempt %d: %s", job_id, attempt, error or "delivered")
    return backoff(settings, attempt) if again else None
