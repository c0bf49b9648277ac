"""The train loop on CPU: seeded reproducibility, starting points (base, pretrained), checkpoints."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import load

from facesense.registry import Registry
from facesense.storage import LocalStore
from facesense.synthetic import make_dataset
from facesense.trainparams import TrainParams
from runtime.architectures import GREY_64, architecture
from runtime.network import build, build_alexnet, register_state
from runtime.preprocess import spec_for
from trainer.data import load_data
from trainer.train import Checkpoints, Start, fit, initial_state, planned_epochs, warmup_epochs

HEAD = "classifier.6"  # AlexNet's class head
SPEC = spec_for(64)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    make_dataset(root / "faces", per_class=6)
    return load_data(LocalStore(root / "faces"), val_split=0.34, seed=0, spec=SPEC,
                     cache_dir=root / "cache", max_pixels=10**8)


def params(**kw) -> TrainParams:
    return TrainParams.parse({"epochs": 1, "batch_size": 4, "image_size": 64, "min_steps": 0,
                              **kw})


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
                 on_epoch=lambda row: written.append(sorted(store.list(""))),
                 start=Start("mini_xception"))  # the interval is the loop's rule, any network
    assert written == [[], []]  # epochs of seconds: nothing written within the hour
    assert [r["epoch"] for r in result.history] == [1, 2] and result.state


def test_pretrained_weights_start_the_backbone_with_a_new_head():
    torch.manual_seed(5)
    imagenet = build_alexnet(1000).state_dict()
    buf = io.BytesIO()
    torch.save(imagenet, buf)
    start = initial_state(params(pretrained=True), ["happy", "sad"], None, None,
                          pretrained=buf.getvalue)
    assert start.arch == "alexnet" and start.fine_tuning and start.parent is None
    assert torch.equal(start.state["features.0.weight"], imagenet["features.0.weight"])
    assert start.state[f"{HEAD}.weight"].shape[0] == 2


def test_fine_tuning_from_a_base_replaces_the_head_when_classes_differ(tmp_path):
    # (the small mini_xception: the head is replaced by the rule of the loop, any network's)
    registry = Registry(LocalStore(tmp_path))
    torch.manual_seed(3)
    base = register_state(registry, build("mini_xception", 3).state_dict(), ["a", "b", "c"],
                          arch="mini_xception", preprocess=GREY_64)
    first, head = "stem.0.weight", f"{architecture('mini_xception').head}.weight"
    start = initial_state(params(base=base["version"]), ["happy", "sad"], base, registry)
    assert start.parent == base["version"] and start.arch == "mini_xception"
    assert start.state[head].shape[0] == 2
    base_state = load(registry.weights(base))
    assert torch.equal(start.state[first], base_state[first])
    same = initial_state(params(base=base["version"]), ["a", "b", "c"], base, registry)
    assert torch.equal(same.state[head], base_state[head])


def test_fine_tuning_trains_the_backbone_slower_than_the_head(data, tmp_path):
    # (the small mini_xception: the backbone's own rate is the loop's rule, any network's)
    registry = Registry(LocalStore(tmp_path))
    torch.manual_seed(4)
    base = register_state(registry, build("mini_xception", 2).state_dict(), ["happy", "sad"],
                          arch="mini_xception", preprocess=GREY_64)
    start = initial_state(params(base=base["version"]), ["happy", "sad"], base, registry)
    first, head = "stem.0.weight", f"{architecture('mini_xception').head}.weight"
    frozen = fit(data, params(backbone_lr=0.0, epochs=2), SPEC, device=CPU, precision="fp32",
                 start=start)
    assert torch.equal(frozen.state[first], start.state[first])
    assert not torch.equal(frozen.state[head], start.state[head])
    slow = fit(data, params(backbone_lr=0.1, epochs=2), SPEC, device=CPU, precision="fp32",
               start=start)
    assert not torch.equal(slow.state[first], start.state[first])


def test_a_small_set_gets_enough_steps_and_the_plan_says_why():
    epochs, why = planned_epochs(params(epochs=5, batch_size=32, min_steps=300), 48)
    assert epochs == 150 and "from 5 to 150" in why and "48 training images" in why
    assert planned_epochs(params(epochs=5, batch_size=32, min_steps=0), 48) == (5, None)
    assert planned_epochs(params(epochs=5, batch_size=4, min_steps=100), 400) == (5, None)
    assert planned_epochs(params(epochs=1, batch_size=1, min_steps=100_000), 2)[0] == 1000


def test_early_stopping_waits_for_warm_up(data):
    # At lr 1e-7 nothing improves after epoch 1: patience 1 alone would stop after epoch 2.
    # 30 epochs warm up for 3, and patience counts from the end of warm-up.
    # (the small mini_xception: the rule is the loop's, AlexNet's epochs only cost time)
    result = fit(data, params(epochs=30, patience=1, lr=1e-7), SPEC, device=CPU,
                 precision="fp32", start=Start("mini_xception"))
    assert len(result.history) == warmup_epochs(30) + 1 and result.best_epoch <= 3
