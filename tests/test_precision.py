"""Precision per version and per machine: the agreement record, the choice, the variants run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facesense.errors import FacesenseError, ModelError
from facesense.registry import Registry
from facesense.storage import LocalStore
from facesense.synthetic import make_dataset
from facesense.trainparams import TrainParams
from runtime.network import load_model
from runtime.precision import CALIBRATION, choose, digest, read_calibration
from runtime.preprocess import spec_for
from runtime.serving import LoadedModel, forward, serve
from trainer.data import load_data
from trainer.train import Start, fit, manifest_for, register
from worker.model_cache import ModelCache

SPEC = spec_for(64)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small trained version, registered with its agreement record, and its data."""
    root = tmp_path_factory.mktemp("precision")
    make_dataset(root / "faces", per_class=8)
    data = load_data(LocalStore(root / "faces"), val_split=0.5, seed=0, spec=SPEC,
                     cache_dir=root / "cache", max_pixels=10**8)
    params = TrainParams.parse({"epochs": 1, "batch_size": 4, "image_size": 64})
    result = fit(data, params, SPEC, device=CPU, precision="fp32")
    registry = Registry(LocalStore(root / "store"))
    manifest = register(registry, result, manifest_for(result, data, params, SPEC, start=Start("alexnet"),
                                                       job_id=None, source="faces"), data)
    return registry, manifest, data, load_model(manifest, registry.weights(manifest), CPU)


def with_agreement(**agrees: bool) -> dict:
    """A manifest whose record says which variants agree."""
    return {"version": "v", "precision": {"variants": {
        name: {"label_agreement": 1.0 if ok else 0.9, "max_prob_diff": 0.001, "agrees": ok}
        for name, ok in agrees.items()}}}


def never_timed(names):
    raise AssertionError(f"nothing should be timed, asked for {names}")


def test_a_registered_version_records_how_each_reduced_precision_agrees(trained):
    registry, manifest, data, model = trained
    record = manifest["precision"]
    assert record["images"] == len(data.val_x) and record["sample"] == "validation images"
    assert set(record["variants"]) == {"bf16", "bf16-full", "fp16", "int8"}
    # Then the bf16 figures are those of the engine's own fp32 and bf16 passes on those images
    images = data.val_x[:].numpy()
    fp32 = forward(LoadedModel("v", [], SPEC, model, CPU, "fp32"), images)
    bf16 = forward(LoadedModel("v", [], SPEC, model, CPU, "bf16"), images)
    bf16_record = record["variants"]["bf16"]
    assert bf16_record["max_prob_diff"] == pytest.approx(np.abs(fp32 - bf16).max(), abs=1e-4)
    assert bf16_record["label_agreement"] == pytest.approx(
        (fp32.argmax(1) == bf16.argmax(1)).mean(), abs=1e-4)
    assert bf16_record["agrees"] == (bf16_record["label_agreement"] >= 0.995
                                     and bf16_record["max_prob_diff"] <= 0.01)
    # And the int8 calibration images are kept with the version, checksummed
    calibration = read_calibration(registry.file(manifest["version"], CALIBRATION))
    assert calibration.shape[1:] == (64, 64, 3) and digest(calibration) == record[
        "calibration_sha256"]


@pytest.mark.parametrize("precision", ["bf16-full", "fp16", "int8"])
def test_each_other_variants_figures_are_those_of_the_engine_serving_it(trained, precision):
    registry, manifest, data, model = trained
    record = manifest["precision"]["variants"][precision]
    # The variant as a worker serves it when FACESENSE_PRECISION forces it (int8 with the
    # version's own calibration images), against the engine's fp32 pass on the same images
    calibration = read_calibration(registry.file(manifest["version"], CALIBRATION))
    served = serve(manifest, model, CPU, precision, batch_size=4, calibration=lambda: calibration)
    assert served.precision == precision
    images = data.val_x[:].numpy()
    fp32 = forward(LoadedModel("v", [], SPEC, model, CPU, "fp32"), images)
    probs = forward(served, images)
    assert record["max_prob_diff"] == pytest.approx(np.abs(fp32 - probs).max(), abs=1e-4)
    assert record["label_agreement"] == pytest.approx((fp32.argmax(1) == probs.argmax(1)).mean(),
                                                      abs=1e-4)
    assert record["agrees"] == (record["label_agreement"] >= 0.995
                                and record["max_prob_diff"] <= 0.01)


def test_without_native_bf16_only_an_agreeing_int8_is_timed():
    manifest = with_agreement(**{"bf16": True, "bf16-full": True, "fp16": True, "int8": False})
    assert choose("auto", CPU, manifest, never_timed, cpu_bf16=False) == (
        "fp32", "fp32: no native bf16, int8 does not agree")
    asked = []
    timings = lambda names: asked.append(names) or {"fp32": 1.0, "int8": 0.5}  # noqa: E731
    assert choose("auto", CPU, with_agreement(int8=True), timings, cpu_bf16=False) == (
        "int8", "int8: agrees, 2.0x faster")
    assert asked == [("fp32", "int8")]


def test_native_bf16_picks_the_fastest_agreeing_variant_with_a_clear_margin():
    manifest = with_agreement(**{"bf16": True, "bf16-full": True, "int8": False})
    seconds = {"fp32": 1.0, "bf16": 0.7, "bf16-full": 0.48}
    assert choose("auto", CPU, manifest, lambda names: {n: seconds[n] for n in names},
                  cpu_bf16=True) == ("bf16-full", "bf16-full: agrees, 2.1x faster")
    close = {"fp32": 1.0, "bf16": 0.95, "bf16-full": 0.9}
    assert choose("auto", CPU, manifest, lambda names: close, cpu_bf16=True) == (
        "fp32", "fp32: bf16-full agrees but is only 1.11x faster")


def test_a_variant_the_manifest_does_not_clear_is_never_timed():
    asked = []
    timings = lambda names: asked.append(names) or {"fp32": 1.0, "bf16": 0.4}  # noqa: E731
    manifest = with_agreement(**{"bf16": True, "bf16-full": False})
    assert choose("auto", CPU, manifest, timings, cpu_bf16=True)[0] == "bf16"
    assert asked == [("fp32", "bf16")]
    assert choose("auto", CPU, {"version": "old"}, never_timed, cpu_bf16=True) == (
        "fp32", "fp32: the version records no agreement with fp32")


def test_a_forced_precision_wins_and_bad_ones_are_refused():
    assert choose("bf16", CPU, {}, never_timed, cpu_bf16=False) == (
        "bf16", "bf16: set by FACESENSE_PRECISION")
    with pytest.raises(FacesenseError, match="unknown precision 'int4'"):
        choose("int4", CPU, {}, never_timed)
    with pytest.raises(FacesenseError, match="CPU only"):
        choose("int8", torch.device("cuda"), {}, never_timed)


def test_a_worker_serves_the_variant_chosen_for_this_version(trained):
    _, manifest, data, model = trained
    agreeing = {**manifest, "precision": {**manifest["precision"], "variants": {
        **manifest["precision"]["variants"],
        "bf16-full": {"agrees": True}, "int8": {"agrees": False}}}}
    seconds = {"fp32": 1.0, "bf16": 0.9, "bf16-full": 0.4}
    loaded = serve(agreeing, model, CPU, "auto", batch_size=4, cpu_bf16=True,
                   timings=lambda names: {n: seconds[n] for n in names})
    assert (loaded.precision, loaded.reason) == ("bf16-full", "bf16-full: agrees, 2.5x faster")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    images = data.val_x[:].numpy()
    fp32 = forward(LoadedModel("v", [], SPEC, model, CPU, "fp32"), images)
    assert np.abs(forward(loaded, images) - fp32).max() < 0.05  # bf16 rounding, not garbage


def test_int8_runs_only_with_the_calibration_its_agreement_was_measured_with(trained):
    registry, manifest, data, model = trained
    int8_agrees = {**manifest, "precision": {**manifest["precision"], "variants": {
        **manifest["precision"]["variants"], "int8": {"agrees": True}}}}
    calibration = read_calibration(registry.file(manifest["version"], CALIBRATION))
    timings = lambda names: {"fp32": 1.0, "int8": 0.5}  # noqa: E731
    loaded = serve(int8_agrees, model, CPU, "auto", batch_size=4, cpu_bf16=False,
                   calibration=lambda: calibration, timings=timings)
    assert loaded.precision == "int8"
    assert forward(loaded, data.val_x[:].numpy()).shape == (len(data.val_x), 2)
    changed = serve(int8_agrees, model, CPU, "auto", batch_size=4, cpu_bf16=False,
                    calibration=lambda: calibration[::-1].copy(), timings=timings)
    assert (changed.precision, changed.reason) == ("fp32", "fp32: no native bf16, int8 does not agree")
    with pytest.raises(ModelError, match="int8 calibration images"):
        serve(manifest, model, CPU, "int8", batch_size=4)  # forced, on a version without them


def test_the_model_cache_records_the_choice_for_the_job(trained):
    registry, manifest, _, _ = trained
    forced = ModelCache(registry, CPU, "fp32", setting="fp32").get(manifest["version"])
    assert (forced.precision, forced.reason) == ("fp32", "fp32: set by FACESENSE_PRECISION")
