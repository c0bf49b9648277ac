"""The train loop on CPU: seeded reproducibility, starting points (base, pretrained), checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load

from facesense.errors import ModelError
from facesense.registry import Registry
from facesense.storage import LocalStore
from facesense.synthetic import make_dataset
from facesense.trainparams import TrainParams
from runtime.network import HEAD, build_alexnet, register_state
from runtime.preprocess import spec_for
from trainer.data import load_data
from trainer.train import Checkpoints, fit, initial_state

SPEC = spec_for(64)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    make_dataset(root / "faces", per_class=6)
    return load_data(LocalStore(root / "faces"), val_split=0.34, seed=0, spec=SPEC,
                     cache_dir=root / "cache", max_pixels=10**8)


def params(**kw) -> TrainParams:
    return TrainParams.parse({"epochs": 1, "batch_size": 4, "image_size": 64, **kw})


def test_training_is_reproducible_on_cpu(data):
    a = fit(data, params(), SPEC, device=CPU, precision="fp32")
    b = fit(data, params(), SPEC, device=CPU, precision="fp32")
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    c = fit(data, params(seed=1), SPEC, device=CPU, precision="fp32")
    assert not torch.equal(a.state["features.0.weight"], c.state["features.0.weight"])


def test_a_resumed_run_equals_an_uninterrupted_one(data, tmp_path):
    whole = fit(data, params(epochs=2, patience=0), SPEC, device=CPU, precision="fp32")
    first = Checkpoints(LocalStore(tmp_path), "ckpt.pt")

    class StopAfterOne(Exception):
        pass

    def stop_after_first(row):  # the worker "dies" right after epoch 1's checkpoint
        raise StopAfterOne

    with pytest.raises(StopAfterOne):
        fit(data, params(epochs=2, patience=0), SPEC, device=CPU, precision="fp32",
            checkpoints=first, on_epoch=stop_after_first)
    assert first.load()["epoch"] == 1
    resumed = fit(data, params(epochs=2, patience=0), SPEC, device=CPU, precision="fp32",
                  checkpoints=first)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[1]["resumed"] and not resumed.history[0]["resumed"]
    assert all(torch.equal(whole.state[k], resumed.state[k]) for k in whole.state)


def test_no_checkpoint_is_written_before_its_interval_has_passed(data, tmp_path):
    store = LocalStore(tmp_path)
    written = []
    result = fit(data, params(epochs=2, patience=0), SPEC, device=CPU, precision="fp32",
                 checkpoints=Checkpoints(store, "ckpt.pt", interval_s=3600),
                 on_epoch=lambda row: written.append(sorted(store.list(""))))
    assert written == [[], []]  # epochs of seconds: nothing written within the hour
    assert [r["epoch"] for r in result.history] == [1, 2] and result.state


def test_pretrained_weights_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not in the torch cache"):
        initial_state(params(pretrained=True), ["happy", "sad"], None)


def test_fine_tuning_from_a_base_replaces_the_head_when_classes_differ(tmp_path):
    registry = Registry(LocalStore(tmp_path))
    torch.manual_seed(3)
    base = register_state(registry, build_alexnet(3).state_dict(), ["a", "b", "c"])
    state, parent = initial_state(params(base=base["version"]), ["happy", "sad"], registry)
    assert parent == base["version"]
    assert state[f"{HEAD}.weight"].shape[0] == 2
    base_state = load(registry.weights(base))
    assert torch.equal(state["features.0.weight"], base_state["features.0.weight"])
    same, _ = initial_state(params(base=base["version"]), ["a", "b", "c"], registry)
    assert torch.equal(same[f"{HEAD}.weight"], base_state[f"{HEAD}.weight"])
