"""`facesense models measure`: an old version's same weights, re-registered with its agreement."""

from __future__ import annotations

import os

import pytest
import torch

from facesense.registry import Registry
from facesense.storage import LocalStore
from runtime.network import build_alexnet, load_model, register_state, to_bytes
from runtime.precision import CALIBRATION
from runtime.preprocess import spec_for
from tests.test_cli import facesense  # the CLI in a child process


@pytest.fixture
def setup(tmp_path):
    """A local store holding one version registered without an agreement record."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env["FACESENSE_DATA_DIR"] = str(tmp_path)
    registry = Registry(LocalStore(tmp_path / "store"))
    torch.manual_seed(0)
    old = register_state(registry, build_alexnet(2).state_dict(), ["happy", "sad"],
                         preprocess=spec_for(96), metrics={"val_accuracy": 0.9}, job_id="j1",
                         files={"history.json": b"[]"})
    registry.promote(old["version"], "production", by="test")
    return env, registry, old


def test_measure_re_registers_the_same_weights_with_the_record(setup):
    env, registry, old = setup
    out = facesense("models", "measure", "production", "--sample-images", "6",
                    "--promote", "legacy", env=env)
    new = registry.manifest(out.stdout.strip())
    assert new["version"] != old["version"] and new["measured_from"] == old["version"]
    assert new["weights_sha256"] == old["weights_sha256"]  # the same weights, now measured
    assert (new["preprocess"], new["metrics"]) == (old["preprocess"], old["metrics"])
    assert "job_id" not in new  # no job made this version
    assert new["precision"]["images"] == 6 and new["precision"]["sample"] == "6 generated photos"
    assert set(new["precision"]["variants"]) == {"bf16", "bf16-full", "fp16", "int8"}
    assert registry.file(new["version"], CALIBRATION)  # what int8 is quantised with
    assert registry.file(new["version"], "history.json") == b"[]"
    assert registry.alias("legacy")["version"] == new["version"]
    assert registry.alias("production")["version"] == old["version"]  # only the alias asked


def test_a_wrong_name_fails_before_anything_is_measured(setup):
    env, registry, old = setup
    missing = facesense("models", "measure", "v-nope", env=env, check=False)
    assert missing.returncode != 0 and "no model version or alias 'v-nope'" in missing.stderr
    taken = facesense("models", "measure", old["version"], "--new-version", old["version"],
                      env=env, check=False)
    assert taken.returncode != 0 and "already exists; versions are immutable" in taken.stderr
    assert "measuring" not in taken.stderr  # refused before the minutes-long measurement
    assert len(registry.versions()) == 1


def test_a_half_precision_state_loads_as_an_fp32_model_of_its_own():
    state = {k: v.half() for k, v in build_alexnet(2).state_dict().items()}
    weights = to_bytes(state)
    snapshot = bytes(bytearray(weights))  # a copy that shares nothing with weights
    model = load_model({"version": "v", "classes": ["a", "b"]}, weights, torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 64, 64)).dtype == torch.float32
    for p in model.parameters():  # copies of their own: writing leaves the bytes as they were
        p.data.add_(1)
    assert weights == snapshot
