"""A retry's optional body, as documented: `model` names another version or alias than the
failed job's own, `priority` another priority; without them the retry keeps both."""

from __future__ import annotations

import pytest

from facesense.registry import Registry
from facesense.storage import store_from_settings
from tests.conftest import wait_for_job
from tests.imagegen import make_folder


@pytest.fixture(scope="module")
def other_version(settings, model_version) -> dict:
    """A second 2-class version (the small mini_xception: cheap to register and to run)."""
    import torch

    from runtime.architectures import GREY_64
    from runtime.network import build, register_state

    torch.manual_seed(1)
    return register_state(Registry(store_from_settings(settings)),
                          build("mini_xception", 2).state_dict(), ["happy", "sad"],
                          arch="mini_xception", preprocess=GREY_64, source="tests: retry")


@pytest.fixture(scope="module")
def failed_once(client_module, worker, base_dir, model_version) -> dict:
    """A finished scoring job at priority low, by the production version, with 3 failed images."""
    folder = base_dir / "retry-contract"
    make_folder(folder, 2, max_side=96)  # + truncated.jpg, notes.png, empty.jpeg
    record = wait_for_job(client_module, client_module.post("/v1/jobs", json={
        "type": "classify", "source": str(folder), "priority": "low"}).get_json()["id"])
    assert record["progress"]["failed"] == 3 and record["priority"] == "low"
    assert record["model_version"] == model_version["version"]
    return record


@pytest.fixture(scope="module")
def client_module(settings, model_version):
    """The in-process API, shared by this module's tests."""
    from api import create_app

    return create_app(settings).test_client()


def test_a_retry_body_naming_a_model_and_a_priority_overrides_both(client_module, failed_once,
                                                                   other_version):
    resp = client_module.post(f"/v1/jobs/{failed_once['id']}/retry",
                              json={"model": other_version["version"], "priority": "high"})
    assert resp.status_code == 202, resp.get_json()
    queued = resp.get_json()
    assert queued["retry_of"] == failed_once["id"] and queued["priority"] == "high"
    assert queued["model_version"] == other_version["version"]
    # and the images are scored by that version, not the failed job's
    done = wait_for_job(client_module, queued["id"])
    assert done["status"] == "succeeded" and done["model_version"] == other_version["version"]
    assert done["progress"]["total"] == 3


def test_a_retry_body_naming_an_alias_resolves_it_now(client_module, failed_once, other_version,
                                                      settings, unique):
    Registry(store_from_settings(settings)).promote(other_version["version"], f"retry-{unique}",
                                                    by="tests")
    resp = client_module.post(f"/v1/jobs/{failed_once['id']}/retry",
                              json={"model": f"retry-{unique}"})
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["model_version"] == other_version["version"]
    assert resp.get_json()["priority"] == "low"  # not named: the failed job's priority


def test_a_retry_without_a_body_keeps_the_jobs_version_and_priority(client_module, failed_once):
    resp = client_module.post(f"/v1/jobs/{failed_once['id']}/retry")
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["model_version"] == failed_once["model_version"]
    assert resp.get_json()["priority"] == "low"


@pytest.mark.parametrize(("body", "named"), [({"priority": "urgent"}, "priority"),
                                              ({"model": "no-such-model"}, "no-such-model"),
                                              ({"model": 3}, "model")])
def test_a_bad_retry_body_is_refused_naming_the_field(client_module, failed_once, body, named):
    resp = client_module.post(f"/v1/jobs/{failed_once['id']}/retry", json=body)
    assert resp.status_code in (400, 404), resp.get_json()
    assert named in resp.get_json()["error"]["message"]
