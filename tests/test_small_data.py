"""Training at the sizes teams have: fine-tuning the starter, and no chance-level model promoted."""

from __future__ import annotations

import argparse
import random

import pytest

from cli.launcher import start_workers, stop
from facesense.registry import Registry
from facesense.storage import store_from_settings
from facesense.synthetic import draw_face, jpeg
from tests.conftest import wait_for_job, wait_for_workers
from trainer.chance import binomial_tail, chance_test, images_needed

pytestmark = pytest.mark.slow

TINY = {"epochs": 2, "batch_size": 8, "min_steps": 0, "val_split": 0.5, "faces": False,
        "base": "starter-happy-sad"}


@pytest.fixture(scope="module")
def trainer(settings, worker):
    """A training worker beside the session's scoring worker."""
    from cli.local.models import cmd_models_starter

    cmd_models_starter(argparse.Namespace(classes="happy,sad", version=None, promote=None,
                                          sample=None, sample_images=8), settings)
    procs = start_workers(settings, 1, queues="training")
    wait_for_workers(settings, procs, count=2)
    yield procs[0]
    stop(procs)


def labelled(root, per_class: int, *, names=("smile", "frown"), shuffle: bool = False):
    """Drawn faces in two class folders; shuffle: each photo's folder chosen by a coin."""
    rng = random.Random(7)
    for i in range(2 * per_class):
        happy = i % 2 == 0
        folder = names[rng.random() < 0.5] if shuffle else names[0 if happy else 1]
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{i}.jpg").write_bytes(jpeg(draw_face(rng, happy), rng))
    return root


def test_the_exact_binomial_test_matches_hand_computed_tails():
    assert binomial_tail(5, 5, 0.5) == pytest.approx(1 / 32)
    assert binomial_tail(9, 10, 0.5) == pytest.approx(11 / 1024)  # C(10,9) + C(10,10)
    assert binomial_tail(0, 10, 0.3) == 1.0
    record = chance_test(9, [5, 5])
    assert record["baseline"] == 0.5 and record["p_value"] == pytest.approx(11 / 1024, rel=1e-3)
    assert record["beats_chance"]
    assert not chance_test(8, [8, 2])["beats_chance"]  # 80 % right, but 80 % is the majority
    assert images_needed(0.5) == 5 and images_needed(1 / 3) == 3 and images_needed(1.0) is None


def test_fine_tuning_the_starter_on_a_small_set_makes_a_version_of_its_own(client, trainer,
                                                                           base_dir):
    root = labelled(base_dir / "small-faces", 12)
    job = client.post("/v1/jobs", json={"type": "train", "dataset": str(root), "params": TINY,
                                        "promote": "never"}).get_json()
    record = wait_for_job(client, job["id"])
    assert record["status"] == "succeeded", record
    manifest = client.get(f"/v1/models/{record['model_version']}").get_json()
    assert manifest["arch"] == "mini_xception" and manifest["parent"] == "starter-happy-sad"
    assert manifest["classes"] == ["frown", "smile"]  # the head replaced for the team's classes
    assert manifest["preprocess"]["input_size"] == 64 and manifest["preprocess"]["grayscale"]
    assert "faces" not in manifest  # faces: false asked for whole images
    chance = manifest["chance"]
    assert chance["images"] == 12 and chance["baseline"] == 0.5
    assert chance["correct"] == sum(manifest["metrics"]["confusion_matrix"][i][i] for i in (0, 1))


def test_a_version_no_better_than_chance_is_not_promoted_unless_forced(client, trainer,
                                                                        base_dir, settings):
    root = labelled(base_dir / "coin-labels", 12, shuffle=True)
    registry = Registry(store_from_settings(settings))
    before = registry.alias("coin")
    job = client.post("/v1/jobs", json={"type": "train", "dataset": str(root), "params": TINY,
                                        "promote": "always", "alias": "coin"}).get_json()
    record = wait_for_job(client, job["id"])
    assert record["status"] == "succeeded", record
    assert record["chance"]["beats_chance"] is False, record["chance"]
    promotion = record["promotion"]
    assert promotion["promoted"] is False and "does not beat" in promotion["reason"]
    assert "guessing the commonest class" in promotion["reason"]
    assert registry.alias("coin") == before  # nothing moved
    version = record["model_version"]
    refused = client.post(f"/v1/models/{version}/promote", json={"alias": "coin"})
    assert refused.status_code == 409
    assert "does not beat chance" in refused.get_json()["error"]["message"]
    forced = client.post(f"/v1/models/{version}/promote", json={"alias": "coin", "force": True})
    assert forced.status_code == 200
    assert forced.get_json()["history"][-1] == {**forced.get_json()["history"][-1],
                                                "to": version, "forced": True}


def test_promote_force_promotes_and_the_job_says_it_was_forced(client, trainer, base_dir,
                                                               settings):
    root = labelled(base_dir / "coin-labels-2", 12, shuffle=True)
    job = client.post("/v1/jobs", json={"type": "train", "dataset": str(root), "params": TINY,
                                        "promote": "force", "alias": "forced"}).get_json()
    record = wait_for_job(client, job["id"])
    assert record["status"] == "succeeded", record
    assert record["promotion"]["promoted"] and record["promotion"]["forced"]
    assert "forced" in record["promotion"]["reason"]
    history = Registry(store_from_settings(settings)).alias("forced")["history"]
    assert history[-1]["to"] == record["model_version"] and history[-1]["forced"] is True


def test_a_validation_set_too_small_to_beat_chance_is_refused_before_training(client, trainer,
                                                                               base_dir):
    root = labelled(base_dir / "too-few", 3)  # 0.5 of 3 a class: 2 + 2 validation images
    job = client.post("/v1/jobs", json={"type": "train", "dataset": str(root),
                                        "params": TINY}).get_json()
    record = wait_for_job(client, job["id"])
    assert record["status"] == "failed"
    assert "needs at least 5 validation images" in record["error"], record["error"]
    assert not record.get("history")  # refused before the first epoch
