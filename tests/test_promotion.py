"""Promotion policies on real weights: if_better promotes only a version that beats the holder."""

from __future__ import annotations

import pytest
import torch

from facesense.registry import Registry
from facesense.storage import LocalStore
from runtime.network import build_alexnet, register_state
from runtime.preprocess import spec_for
from trainer.data import Dataset
from trainer.promotion import promote

CPU = torch.device("cpu")
SPEC = spec_for(64)


def constant_model(registry: Registry, answer: int) -> dict:
    """A registered version that answers class `answer` for every image (zero weights, bias)."""
    state = {k: torch.zeros_like(v) for k, v in build_alexnet(2).state_dict().items()}
    state["classifier.6.bias"][answer] = 5.0
    return register_state(registry, state, ["happy", "sad"], preprocess=SPEC,
                          metrics={"accuracy": float(answer)})


@pytest.fixture
def world(tmp_path):
    """A registry and validation images that are all 'sad'."""
    registry = Registry(LocalStore(tmp_path / "store"))
    n = 6
    data = Dataset(classes=["happy", "sad"], train_x=torch.zeros((0, 73, 73, 3), dtype=torch.uint8),
                   train_y=torch.zeros(0, dtype=torch.long),
                   val_x=torch.randint(0, 256, (n, 64, 64, 3), dtype=torch.uint8),
                   val_y=torch.ones(n, dtype=torch.long), val_keys=[f"sad/{i}.jpg" for i in range(n)],
                   fingerprint="f" * 64)
    return registry, data


def candidate(accuracy: float) -> dict:
    return {"version": "candidate-v", "metrics": {"accuracy": accuracy}}


def run(registry, data, policy: str, accuracy: float) -> dict:
    return promote(registry, candidate(accuracy), data, policy, by="test", source=None,
                   device=CPU, precision="fp32")


def test_if_better_promotes_a_version_that_beats_the_holder(world):
    registry, data = world
    holder = constant_model(registry, answer=0)  # always 'happy': 0 % on the sad images
    registry.promote(holder["version"], "production", by="test")
    registry.register(b"w", {"classes": ["happy", "sad"], "arch": "alexnet"}, version="candidate-v")
    out = run(registry, data, "if_better", accuracy=0.5)
    assert out["incumbent"] == holder["version"] and out["incumbent_accuracy"] == 0.0
    assert out["promoted"] is True
    assert registry.alias("production")["version"] == "candidate-v"


def test_if_better_keeps_a_holder_that_does_at_least_as_well(world):
    registry, data = world
    holder = constant_model(registry, answer=1)  # always 'sad': 100 % on the sad images
    registry.promote(holder["version"], "production", by="test")
    out = run(registry, data, "if_better", accuracy=0.5)
    assert out["incumbent_accuracy"] == 1.0 and out["promoted"] is False
    assert "not better" in out["reason"]
    assert registry.alias("production")["version"] == holder["version"]


def test_if_better_with_no_holder_promotes_and_never_does_nothing(world):
    registry, data = world
    registry.register(b"w", {"classes": ["happy", "sad"], "arch": "alexnet"}, version="candidate-v")
    assert run(registry, data, "never", accuracy=0.1) == {
        "policy": "never", "alias": "production", "promoted": False, "candidate_accuracy": 0.1}
    assert registry.alias("production") is None
    assert run(registry, data, "if_better", accuracy=0.1)["promoted"] is True
    assert registry.alias("production")["version"] == "candidate-v"


def test_a_holder_with_other_classes_is_not_compared(world):
    registry, data = world
    other = register_state(registry, build_alexnet(3).state_dict(), ["a", "b", "c"])
    registry.promote(other["version"], "production", by="test")
    out = run(registry, data, "if_better", accuracy=0.9)
    assert out["promoted"] is False and "other classes" in out["reason"]
