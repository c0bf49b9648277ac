"""Training as a job: API -> real training worker -> a registered version -> promotion -> scoring."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from cli.launcher import start_workers, stop
from facesense.queue import TRAIN, TRAINING_QUEUE, make_celery
from facesense.state import leases, redis_keys
from facesense.state.leases import Leases
from facesense.storage import store_from_settings
from facesense.storage.layout import checkpoint_key
from facesense.synthetic import make_dataset
from tests.conftest import BUCKET, messages_for, wait_for_job, wait_for_workers
from tests.imagegen import make_folder, upload_folder

pytestmark = pytest.mark.slow

SMALL = {"epochs": 3, "batch_size": 8, "image_size": 64, "patience": 0, "min_steps": 0}


@pytest.fixture(scope="module")
def faces(base_dir):
    """A small generated 2-class ImageFolder dataset."""
    root = base_dir / "faces-small"
    make_dataset(root, per_class=16, seed=5)
    (root / "sad" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


@pytest.fixture(scope="module")
def trainer_settings(settings):
    """A training worker that notices a dead peer quickly (short visibility timeout and lease),
    at fp32: "auto" would time AlexNet at 224 px in each of the three it starts."""
    return settings.replace(visibility_timeout=4, lease_ttl_s=3, precision="fp32")


def start_trainer(trainer_settings):
    procs = start_workers(trainer_settings, 1, queues="training")
    wait_for_workers(trainer_settings, procs, count=1)
    return procs[0]


@pytest.fixture(scope="module")
def training_worker(trainer_settings, worker):
    proc = start_trainer(trainer_settings)
    yield proc
    stop([proc])


@pytest.fixture(scope="module")
def small_base(settings) -> str:
    """A random 2-class mini_xception version: fine-tuned from, a run's checkpoints are a few MB
    (AlexNet's, with AdamW's state, ~900 MB: a resume test would mostly time the store)."""
    import torch

    from facesense.registry import Registry
    from runtime.architectures import GREY_64
    from runtime.network import build, register_state

    torch.manual_seed(2)
    return register_state(Registry(store_from_settings(settings)),
                          build("mini_xception", 2).state_dict(), ["happy", "sad"],
                          arch="mini_xception", preprocess=GREY_64,
                          source="tests: a small base")["version"]


def train_until_first_epoch(client, faces, epochs: int, **params) -> str:
    """Queue a training job and return its id once its first epoch (and checkpoint) is done."""
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": str(faces),
                                         "params": {**SMALL, "epochs": epochs, **params}})
    job_id = resp.get_json()["id"]
    deadline = time.monotonic() + 180
    while (client.get(f"/v1/jobs/{job_id}").get_json().get("epoch") or 0) < 1:
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.05)
    return job_id


def test_train_promote_and_score_with_the_new_version(client, training_worker, faces,
                                                      model_version, small_base):
    # fine-tuned from the small mini_xception: the pipeline is under test, not AlexNet (the
    # default network's run through the worker: test_faces_jobs, test_cli's trainer)
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": str(faces),
                                         "params": {**SMALL, "base": small_base},
                                         "promote": "never"})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded", record
    assert [row["epoch"] for row in record["history"]] == [1, 2, 3]
    assert record["progress"]["done"] == 3 and record["promotion"]["promoted"] is False
    assert record["dataset_info"]["skipped"] == 1
    assert record["dataset_info"]["skipped_examples"][0]["image"] == "sad/broken.jpg"

    version = record["model_version"]
    manifest = client.get(f"/v1/models/{version}").get_json()
    assert manifest["classes"] == ["happy", "sad"] and manifest["job_id"] == record["id"]
    assert manifest["preprocess"]["input_size"] == 64 and manifest["arch"] == "mini_xception"
    metrics = manifest["metrics"]
    assert 0 <= metrics["accuracy"] <= 1 and len(metrics["confusion_matrix"]) == 2
    assert sum(map(sum, metrics["confusion_matrix"])) == manifest["dataset"]["counts"]["happy"][
        "val"] + manifest["dataset"]["counts"]["sad"]["val"]
    assert set(metrics["per_class"]["happy"]) == {"precision", "recall", "f1", "support"}
    assert manifest["params"]["epochs"] == 3 and len(manifest["dataset"]["fingerprint"]) == 64
    assert len(manifest["weights_sha256"]) == 64

    # Promote by request (forced: a 3-epoch run may not beat chance, and says so), then score
    # explicitly with that alias's holder.
    promoted = client.post(f"/v1/models/{version}/promote", json={"alias": "candidate",
                                                                   "force": True})
    assert promoted.status_code == 200
    moved = promoted.get_json()["history"][-1]
    assert moved["to"] == version
    assert moved.get("forced", False) is not manifest["chance"]["beats_chance"]
    scoring = client.post("/v1/jobs", json={"type": "classify", "source": str(faces / "happy"),
                                            "model": "candidate"}).get_json()
    scored = wait_for_job(client, scoring["id"])
    assert scored["status"] == "succeeded" and scored["model_version"] == version
    assert scored["progress"]["total"] == 16


def test_if_better_compares_with_the_alias_holder_on_an_s3_dataset(client, training_worker,
                                                                    faces, s3, unique,
                                                                    small_base):
    # The random-init production model (tests' fixture) sits near chance on these faces; a
    # version trained on them is promoted only if it does better on the same validation images.
    upload_folder(s3, BUCKET, f"datasets/{unique}", faces)
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": f"s3://{BUCKET}/datasets/"
                                         f"{unique}", "params": {**SMALL, "epochs": 1,
                                                                 "base": small_base},
                                         "promote": "if_better"})
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded", record
    assert record["dataset_info"]["counts"]["happy"]["train"] + record["dataset_info"][
        "counts"]["happy"]["val"] == 16
    promotion = record["promotion"]
    assert "incumbent_accuracy" in promotion
    assert promotion["promoted"] == (promotion["candidate_accuracy"]
                                     > promotion["incumbent_accuracy"]
                                     and record["chance"]["beats_chance"])


def test_unknown_and_bad_params_are_named(client, faces):
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": str(faces),
                                         "params": {"epochz": 3, "lr": "fast"}})
    assert resp.status_code == 400
    assert "epochz" in resp.get_json()["error"]["message"]
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": str(faces),
                                         "params": {"image_size": 32, "optimizer": "lbfgs"}})
    message = resp.get_json()["error"]["message"]
    assert resp.status_code == 400 and "image_size" in message and "optimizer" in message
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": str(faces),
                                         "promote": "sometimes"})
    assert resp.status_code == 400 and "promote" in resp.get_json()["error"]["message"]


def test_a_one_class_dataset_fails_before_training(client, training_worker, base_dir):
    root = base_dir / "one-class"
    make_dataset(root, per_class=3)
    (root / "sad").rename(root / "sad-later")  # still 2 folders... make it one:
    for p in (root / "sad-later").iterdir():
        p.unlink()
    (root / "sad-later").rmdir()
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": str(root)})
    assert resp.status_code == 400, resp.get_json()  # refused at submission: nothing queued
    error = resp.get_json()["error"]
    assert error["code"] == "bad_dataset_layout"
    assert "at least 2" in error["message"] and "happy" in error["message"]


def test_cancel_stops_training_and_publishes_nothing(client, training_worker, faces,
                                                     trainer_settings):
    job_id = train_until_first_epoch(client, faces, epochs=40)
    store = plant_checkpoints(trainer_settings, job_id)  # as a run past its interval leaves
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    # The worker gives its lease up when the training task returns: wait for that event.
    alive = Leases(redis.Redis.from_url(trainer_settings.redis_url)).alive
    deadline = time.monotonic() + 60
    while alive(job_id, leases.TRAINING):
        assert time.monotonic() < deadline, "the worker went on training after the cancel"
        time.sleep(0.05)
    record = client.get(f"/v1/jobs/{job_id}").get_json()
    assert record["status"] == "cancelled" and record["epoch"] <= 2
    assert job_id not in [v.get("job_id") for v in client.get("/v1/models").get_json()["versions"]]
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    # the run's checkpoints go with it (~1 GB each for AlexNet: any key could fill the disk)
    wait_gone(store, checkpoint_key(job_id), checkpoint_key(job_id).replace(".pt", "-best.safetensors"))


def plant_checkpoints(settings, job_id: str):
    """Stand-ins for a run's checkpoint and best weights (a real one takes 300 s to be due);
    returns the store."""
    store = store_from_settings(settings)
    best = checkpoint_key(job_id).replace(".pt", "-best.safetensors")
    store.put(checkpoint_key(job_id), b"not a checkpoint")
    store.put(best, b"not weights")
    return store


def wait_gone(store, *keys: str, timeout: float = 60) -> None:
    """Block until none of the keys exists (the worker deletes them after the task's run)."""
    deadline = time.monotonic() + timeout
    while any(store.exists(k) for k in keys):
        assert time.monotonic() < deadline, f"still stored after {timeout}s: {keys}"
        time.sleep(0.05)


def test_a_failed_run_deletes_its_checkpoints(client, training_worker, faces, trainer_settings):
    # Given a queued training job whose checkpoint is unreadable (the run fails as it resumes)
    jobs = client.application.extensions["facesense"].jobs
    record = jobs.create("train", dataset=faces.as_uri(), params={**SMALL, "epochs": 1},
                         promote="never", owner=None)
    store = plant_checkpoints(trainer_settings, record["id"])
    make_celery(trainer_settings).send_task(TRAIN, args=[record["id"]])
    # When it fails, then its checkpoints are deleted with it
    failed = wait_for_job(client, record["id"])
    assert failed["status"] == "failed" and "checkpoint" in failed["error"]
    wait_gone(store, checkpoint_key(record["id"]))
    assert not store.exists(checkpoint_key(record["id"]).replace(".pt", "-best.safetensors"))


def test_an_unfinished_job_keeps_its_checkpoints_for_its_retry(trainer_settings, unique):
    # A run that will be retried (transient error, lost lease, killed worker) resumes from them.
    from facesense.state.status import JobStatus
    from worker.context import build_context
    from worker.training import drop_checkpoints

    ctx = build_context(trainer_settings, lambda *_: None)
    record = ctx.jobs.create("train", dataset="file:///nowhere", params={}, owner=None)
    store = plant_checkpoints(trainer_settings, record["id"])
    ctx.jobs.set_status(record["id"], JobStatus.RUNNING)
    assert drop_checkpoints(ctx, record["id"]) is False and store.exists(checkpoint_key(record["id"]))
    ctx.jobs.set_status(record["id"], JobStatus.FAILED, error="gave up after 5 retries")
    assert drop_checkpoints(ctx, record["id"]) is True
    assert not store.exists(checkpoint_key(record["id"]))


def test_a_redelivered_copy_waits_while_a_live_worker_holds_the_lease(client, training_worker,
                                                                      faces, trainer_settings):
    # Given a training job whose lease a live worker holds (another host's heartbeat renews it)
    jobs = client.application.extensions["facesense"].jobs
    job_id = jobs.create("train", dataset=faces.as_uri(), params={**SMALL, "epochs": 40},
                         promote="never", owner=None)["id"]
    r = redis.Redis.from_url(trainer_settings.redis_url)
    lease_key = redis_keys.lease(job_id, leases.TRAINING)
    r.set(lease_key, "live-host:1:1", ex=60)
    # When a copy of its task is delivered to this worker
    make_celery(trainer_settings).send_task(TRAIN, args=[job_id])
    # Then the copy waits to retry (marked so, for the watchdog) and touches nothing
    deadline = time.monotonic() + 60
    while not r.exists(redis_keys.requeued(job_id, leases.TRAINING)):
        assert time.monotonic() < deadline, "the copy neither waited nor trained"
        time.sleep(0.05)
    record = client.get(f"/v1/jobs/{job_id}").get_json()
    assert record["status"] == "queued" and not record.get("epoch"), record
    assert r.get(lease_key) == b"live-host:1:1"
    # When the live worker's lease lapses (it died), Then the copy takes the job over
    r.delete(lease_key)
    while client.get(f"/v1/jobs/{job_id}").get_json()["status"] != "running":
        assert time.monotonic() < deadline + 60, "the copy did not take the job over"
        time.sleep(0.05)
    assert r.get(lease_key) not in (None, b"live-host:1:1")  # under its own lease
    # (training it to the end would only repeat the first test: cancel, and wait for the end)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    while r.exists(lease_key):
        assert time.monotonic() < deadline + 120, "the copy went on training after the cancel"
        time.sleep(0.05)


def test_a_worker_that_loses_its_lease_stops_and_publishes_nothing(client, training_worker,
                                                                   faces, trainer_settings,
                                                                   small_base):
    # (the small base: 1000 of its epochs outlast the test, which ends the run)
    job_id = train_until_first_epoch(client, faces, epochs=1000, base=small_base)
    # When another worker holds the lease (this one stalled past it and a copy took over)
    r = redis.Redis.from_url(trainer_settings.redis_url)
    r.set(redis_keys.lease(job_id, leases.TRAINING), "other-host:2:2", ex=60)
    # Then this worker stops at its next batch: its task returns (its message is acked)
    deadline = time.monotonic() + 60
    while messages_for(r, job_id, TRAINING_QUEUE):
        assert time.monotonic() < deadline, "the worker went on training without its lease"
        time.sleep(0.05)
    record = client.get(f"/v1/jobs/{job_id}").get_json()
    try:
        # and publishes nothing: no version, no final status, the other worker's lease kept
        assert record["status"] == "running" and "model_version" not in record, record
        assert record["epoch"] < 1000
        assert job_id not in [v.get("job_id") for v in client.get("/v1/models").get_json()[
            "versions"]]
        assert r.get(redis_keys.lease(job_id, leases.TRAINING)) == b"other-host:2:2"
    finally:  # nobody trains it any more: end it, so no watchdog brings it back
        client.post(f"/v1/jobs/{job_id}/cancel")
        r.delete(redis_keys.lease(job_id, leases.TRAINING))


def test_a_training_run_counts_against_its_keys_running_jobs_quota(settings, training_worker,
                                                                  faces, model_version,
                                                                  small_base):
    # Given a key allowed one running job, whose training run is under way
    from api import create_app
    from facesense.keys import hash_key, new_key

    key = new_key()
    auth = {"Authorization": f"Bearer {key}"}
    api = create_app(settings.replace(api_keys=f"quota:{hash_key(key)}",
                                      key_max_running_jobs=1)).test_client()

    def submit(**body) -> str:
        resp = api.post("/v1/jobs", json=body, headers=auth)
        assert resp.status_code == 202, resp.get_json()
        return resp.get_json()["id"]

    def job(job_id: str) -> dict:
        return api.get(f"/v1/jobs/{job_id}", headers=auth).get_json()

    def until(check, what: str, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while not (value := check()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)
        return value

    # Given the key's scoring job under way, its training run waits for the slot, saying why
    big = faces.parent / "quota-big"
    make_folder(big, 1000, groups=("a",), max_side=64, corrupt=False)
    scoring = submit(type="classify", source=str(big))
    until(lambda: job(scoring)["status"] == "running", "the scoring job to start")
    training = submit(type="train", dataset=str(faces),  # the small base: outlasts the test
                      params={**SMALL, "epochs": 1000, "base": small_base})
    assert "FACESENSE_KEY_MAX_RUNNING_JOBS" in until(lambda: job(training).get("held"),
                                                     "the training run to be held")
    assert job(training)["status"] == "queued"
    assert api.post(f"/v1/jobs/{scoring}/cancel", headers=auth).status_code == 200
    # When the slot is free the run starts; then the key's next scoring job waits behind it
    until(lambda: (job(training).get("epoch") or 0) >= 1, "the training run's first epoch")
    assert job(training).get("held") is None
    scoring = submit(type="classify", source=str(faces / "happy"))
    held = until(lambda: (r := job(scoring)).get("queue", {}).get("held") and r, "a held job")
    assert "FACESENSE_KEY_MAX_RUNNING_JOBS" in held["queue"]["held"] and "training" in held[
        "queue"]["held"]
    assert held["status"] == "queued" and job(training)["status"] == "running"
    # and starts once the run ends
    assert api.post(f"/v1/jobs/{training}/cancel", headers=auth).status_code == 200
    assert until(lambda: (r := job(scoring))["status"] in ("succeeded", "failed") and r,
                 "the scoring job to end")["status"] == "succeeded"


def test_a_killed_training_worker_resumes_from_its_checkpoint(client, trainer_settings, faces,
                                                              training_worker, small_base):
    stop([training_worker])  # this test (the module's last) brings its own worker, to kill it
    trainer_settings = trainer_settings.replace(checkpoint_interval_s=0)  # every epoch's
    victim = start_trainer(trainer_settings)
    job_id = train_until_first_epoch(client, faces, epochs=2, base=small_base)
    assert store_from_settings(trainer_settings).exists(checkpoint_key(job_id))  # epoch 1's
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = time.time()
    survivor = start_trainer(trainer_settings)
    try:
        record = wait_for_job(client, job_id, timeout=300)
    finally:
        stop([survivor])
    assert record["status"] == "succeeded", record
    history = record["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    # the checkpoints it resumed from are deleted once the version is registered
    wait_gone(store_from_settings(trainer_settings), checkpoint_key(job_id),
              checkpoint_key(job_id).replace(".pt", "-best.safetensors"))
    # Epoch 1 came from the checkpoint written before the kill: it was not trained again.
    assert history[0]["finished_at"] < killed_at and history[0]["resumed"] is False
    assert all(row["resumed"] for row in history if row["finished_at"] > killed_at)
