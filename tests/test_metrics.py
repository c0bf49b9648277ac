"""Prometheus metrics on the API and on a worker, and the worker's JSON logs, around one real job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from cli.launcher import free_port, start_workers, stop
from facesense.errors import ConfigError
from facesense.keys import hash_key, new_key
from facesense.logs import setup_logging
from facesense.queue import INFERENCE_QUEUE, TRAINING_QUEUE
from facesense.state import redis_keys
from facesense.state.scheduler import Scheduler
from tests.conftest import wait_for_workers
from tests.imagegen import make_folder

pytestmark = pytest.mark.slow

GOOD, CORRUPT = 7, 3  # imagegen's corrupt files: truncated JPEG, text as PNG, empty JPEG


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from a Prometheus text page."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(page: dict, name: str, **labels) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def finalize_logged(text: str) -> bool:
    """True once a JSON log holds Celery's line for a finaliser that succeeded."""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line still being written
            continue
        if record.get("task") == "facesense.classify.finalize" and "succeeded" in record.get(
                "message", ""):
            return True
    return False


@pytest.fixture(scope="module")
def run(settings, model_version, base_dir, redis_url):
    """A worker of our own (JSON logs to a file, metrics on a port) on a Redis database of its
    own, so that only it takes this module's jobs; one job of GOOD + CORRUPT images through the
    API, with the API's and the worker's metrics scraped before and after."""
    base_port = free_port()
    # fp32: "auto" would first time AlexNet at 224 px, twice (the choice: test_precision)
    own = settings.replace(redis_url=re.sub(r"/\d+$", "/5", redis_url), log_format="json",
                           worker_metrics_port=base_port, precision="fp32")
    log_path = base_dir / "metrics-worker.log"
    with log_path.open("wb") as log_file:
        # first=1: `facesense up` numbers its workers, and worker i listens on base + i
        procs = start_workers(own, 1, queues="inference", first=1, stderr=log_file)
    try:
        wait_for_workers(own, procs)
        worker_url = f"http://127.0.0.1:{base_port + 1}/metrics"
        folder = base_dir / "metrics-job"
        make_folder(folder, GOOD, groups=("a",), max_side=300)
        client = create_app(own).test_client()
        api_before = samples(client.get("/metrics").get_data(as_text=True))
        worker_before = samples(requests.get(worker_url, timeout=10).text)
        log_offset = log_path.stat().st_size
        submitted = client.post("/v1/jobs", json={"type": "classify", "source": str(folder)})
        job_id, polls = submitted.get_json()["id"], 0
        while True:
            polls += 1
            record = client.get(f"/v1/jobs/{job_id}").get_json()
            if record["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        client.get("/no/such/route")
        client.get("/nor/this/one")
        # the worker logs its finaliser's "succeeded" just after the record says so: wait for it
        deadline = time.monotonic() + 60
        while not finalize_logged(log_path.read_bytes()[log_offset:].decode(errors="replace")):
            assert time.monotonic() < deadline, "the worker never logged its finaliser's end"
            time.sleep(0.05)
        yield {"job_id": job_id, "record": record, "polls": polls,
               "api_before": api_before, "api_after": samples(client.get("/metrics").get_data(
                   as_text=True)),
               "worker_before": worker_before,
               "worker_after": samples(requests.get(worker_url, timeout=10).text),
               "log": log_path.read_bytes()[log_offset:].decode()}
    finally:
        stop(procs)


def test_api_metrics_count_the_requests_made_and_the_job_that_ended(run):
    before, after, polls = run["api_before"], run["api_after"], run["polls"]
    assert run["record"]["status"] == "succeeded", run["record"]

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests_total = "facesense_http_requests_total"
    assert moved(requests_total, method="POST", route="/v1/jobs", status="202") == 1
    assert moved(requests_total, method="GET", route="/v1/jobs/<job_id>", status="200") == polls
    assert moved(requests_total, method="GET", route="/metrics", status="200") == 1  # the first
    # unknown paths share one series: the label is the route's rule, never the raw path
    assert moved(requests_total, method="GET", route="unmatched", status="404") == 2
    assert not [k for k in after if "/no/such" in str(k)]
    latency = "facesense_http_request_duration_seconds"
    assert moved(f"{latency}_count", method="GET", route="/v1/jobs/<job_id>") == polls
    assert moved(f"{latency}_bucket", method="GET", route="/v1/jobs/<job_id>", le="+Inf") == polls
    assert moved(f"{latency}_sum", method="GET", route="/v1/jobs/<job_id>") > 0
    assert moved("facesense_jobs_finished_total", type="classify", status="succeeded") == 1
    assert moved("facesense_jobs_finished_total", type="classify", status="failed") == 0
    assert value(after, "facesense_redis_up") == 1
    for queue in ("inference", "training"):
        assert ("facesense_queue_depth", (("queue", queue),)) in after
    assert value(after, "facesense_jobs", type="classify", status="running") == 0


def test_worker_metrics_count_scored_and_failed_images_and_batches(run):
    before, after = run["worker_before"], run["worker_after"]

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("facesense_worker_images_scored_total") == GOOD
    assert moved("facesense_worker_image_failures_total") == CORRUPT
    assert moved("facesense_worker_batch_size_count") == 1  # 10 images, batches of 32
    assert moved("facesense_worker_batch_size_sum") == GOOD  # corrupt ones never reach the model
    assert moved("facesense_worker_model_load_seconds_count") == 1
    assert value(after, "facesense_worker_images_per_second") > 0
    assert moved("facesense_worker_scoring_seconds_total") > 0


def test_every_worker_line_during_the_job_is_json_and_the_jobs_lines_carry_its_id(run):
    job_id = run["job_id"]
    lines = [line for line in run["log"].splitlines() if line.strip()]
    assert lines
    records = []
    for line in lines:
        record = json.loads(line)  # fails the test on any line that is not JSON
        assert {"ts", "level", "logger", "message", "job_id", "task"} <= set(record), record
        records.append(record)
    ours = [r for r in records if r["job_id"] == job_id]
    # Celery's own received / succeeded lines and ours, for each step of the job
    tasks = {r["task"] for r in ours}
    assert {"facesense.classify.plan", "facesense.classify.shard",
            "facesense.classify.finalize"} <= tasks, tasks
    assert any("received" in r["message"] for r in ours)
    assert any(f"job {job_id}: {GOOD + CORRUPT} images in 1 shards" in r["message"] for r in ours)
    for r in records:  # no line about the job is left without its id
        if job_id in r["message"]:
            assert r["job_id"] == job_id, r
        elif (r["task"] or "").startswith("facesense.classify") and r["job_id"] != job_id:
            # a shard token names no job until the scheduler picks one: only Celery's own
            # lines about the token (received, or one that found nothing to run) lack the id
            assert r["task"] == "facesense.classify.shard" and r["job_id"] is None, r
            assert r["logger"].startswith("celery"), r


def test_queue_depth_is_the_number_of_messages_waiting_in_each_queue(settings, redis_url):
    # Given a Redis database no worker consumes, with 3 messages waiting for inference, 1 for training
    own = settings.replace(redis_url=re.sub(r"/\d+$", "/6", redis_url))
    r = redis.Redis.from_url(own.redis_url)
    r.delete(INFERENCE_QUEUE, TRAINING_QUEUE)
    r.lpush(INFERENCE_QUEUE, "m1", "m2", "m3")
    r.lpush(TRAINING_QUEUE, "t1")
    # and a job with 40 shards registered with the scheduler, 2 of them started
    sched = Scheduler(r)
    r.hset(redis_keys.job("metricsjob"), "status", json.dumps("running"))
    sched.register("metricsjob", "someone")
    sched.add("metricsjob", 40, listed=True)
    sched.pick(), sched.pick()
    try:
        # When the API's metrics are scraped
        page = samples(create_app(own).test_client().get("/metrics").get_data(as_text=True))
    finally:
        r.delete(INFERENCE_QUEUE, TRAINING_QUEUE, redis_keys.job("metricsjob"))
        sched.forget("metricsjob")
    # Then each queue's depth is its length, and the backlog is the shards not yet started
    assert value(page, "facesense_queue_depth", queue="inference") == 3
    assert value(page, "facesense_queue_depth", queue="training") == 1
    assert value(page, "facesense_shards_waiting") == 38


def test_metrics_can_need_a_key_or_be_turned_off(settings, model_version):
    key = new_key()
    keyed = settings.replace(api_keys=f"scraper:{hash_key(key)}")
    open_app = create_app(keyed).test_client()  # default: public, as Prometheus scrapes bare
    assert open_app.get("/metrics").status_code == 200
    assert open_app.get("/v1/jobs").status_code == 401
    locked = create_app(keyed.replace(api_metrics="key")).test_client()
    assert locked.get("/metrics").status_code == 401
    page = locked.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert page.status_code == 200 and page.content_type.startswith("text/plain")
    assert "facesense_http_requests_total" in page.get_data(as_text=True)
    doc = locked.get("/openapi.json").get_json()
    assert "401" in doc["paths"]["/metrics"]["get"]["responses"]
    off = create_app(settings.replace(api_metrics="off")).test_client()
    assert off.get("/metrics").status_code == 404
    assert "/metrics" not in off.get("/openapi.json").get_json()["paths"]


def test_bad_metrics_and_log_settings_stop_start_up(settings):
    with pytest.raises(ConfigError, match="FACESENSE_API_METRICS"):
        create_app(settings.replace(api_metrics="private"))
    with pytest.raises(ConfigError, match="FACESENSE_LOG_FORMAT"):
        setup_logging("INFO", "xml")


# gunicorn forks worker processes: each counts its own requests into PROMETHEUS_MULTIPROC_DIR
FORKED = """
import os, sys
from api import create_app
from facesense.settings import Settings
app = create_app(Settings(redis_url=sys.argv[1], store=sys.argv[2]))
child = os.fork()
app.test_client().get("/no/such/route")
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
print(app.test_client().get("/metrics").get_data(as_text=True))
"""


def test_with_a_multiprocess_dir_metrics_add_up_every_process(settings, tmp_path):
    (tmp_path / "prom").mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    done = subprocess.run([sys.executable, "-c", FORKED, settings.redis_url, str(tmp_path / "store")],
                          env=env, cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = samples(done.stdout)
    assert value(page, "facesense_http_requests_total", method="GET", route="unmatched",
                 status="404") == 2  # one from each process
    assert value(page, "facesense_redis_up") == 1
