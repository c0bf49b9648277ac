"""Hostile requests get a JSON error with the right status: size, methods, types, pagination."""

from __future__ import annotations

import pytest

from api import create_app
from tests.test_api import error_of


def test_the_body_limit_is_the_setting_and_a_large_json_body_is_413_json(settings):
    app = create_app(settings.replace(max_upload_bytes=1000))
    assert app.config["MAX_CONTENT_LENGTH"] == 1000
    resp = app.test_client().post("/v1/jobs", json={"type": "classify", "source": "x" * 5000})
    assert "1000-byte limit" in error_of(resp, 413)["message"]


def test_a_wrong_method_is_405_json_naming_the_allowed_ones(client):
    resp = client.delete("/v1/jobs")
    assert error_of(resp, 405)["code"] == "method_not_allowed"
    assert {"GET", "POST"} <= {m.strip() for m in resp.headers["Allow"].split(",")}
    assert error_of(client.put("/healthz"), 405)


def test_bodies_that_are_not_json_objects_are_400(client, model_version):
    assert "application/json or multipart" in error_of(
        client.post("/v1/jobs", data="type=classify", content_type="text/plain"), 400)["message"]
    path = f"/v1/models/{model_version['version']}/promote"
    assert "not valid JSON" in error_of(
        client.post(path, data="{", content_type="application/json"), 400)["message"]
    assert "JSON object" in error_of(client.post(path, json=["production"]), 400)["message"]
    assert "alias (expected str)" in error_of(client.post(path, json={"alias": 7}), 400)["message"]


def test_unknown_training_params_and_bad_values_are_named(client, base_dir):
    body = {"type": "train", "dataset": str(base_dir), "params": {"epochz": 3}}
    assert "epochz" in error_of(client.post("/v1/jobs", json=body), 400)["message"]
    body["params"] = {"epochs": "many"}
    assert "epochs must be int" in error_of(client.post("/v1/jobs", json=body), 400)["message"]
    body = {"type": "train", "dataset": str(base_dir), "promote": "sometimes"}
    assert "promote must be one of" in error_of(client.post("/v1/jobs", json=body), 400)["message"]


@pytest.mark.parametrize("query, limit, offset", [
    ("limit=1000000000000&offset=-5", 200, 0), ("limit=0", 1, 0), ("limit=-3&offset=7", 1, 7)])
def test_absurd_pagination_is_clamped(client, query, limit, offset):
    body = client.get(f"/v1/jobs?{query}").get_json()
    assert (body["limit"], body["offset"]) == (limit, offset)


@pytest.mark.parametrize("value", ["abc", "1.5", "9" * 5000])
def test_a_non_integer_page_argument_is_400_naming_it(client, value):
    assert "'limit'" in error_of(client.get(f"/v1/jobs?limit={value}"), 400)["message"]


def test_unknown_versions_are_404_on_every_model_route(client):
    assert error_of(client.get("/v1/models/no-such-version"), 404)["code"] == "model_not_found"
    assert error_of(client.post("/v1/models/no-such-version/promote", json={}), 404)
    assert error_of(client.get("/v1/models/..%2F..%2Fetc"), 404)
