"""The HTTP API: submissions, polling, models, health, and JSON errors with the right status."""

from __future__ import annotations

import io
import zipfile

import pytest

from api import create_app
from tests.conftest import wait_for_job
from tests.imagegen import encode, make_folder, make_image


def error_of(resp, status: int) -> dict:
    """Assert a JSON error body with this status; returns it."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()["error"]
    assert body["code"] and body["message"]
    return body


def test_malformed_json_is_400(client):
    resp = client.post("/v1/jobs", data="{not json", content_type="application/json")
    assert "not valid JSON" in error_of(resp, 400)["message"]


def test_unknown_fields_and_wrong_types_are_named(client, base_dir):
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(base_dir),
                                          "colour": "red", "speed": 3})
    assert "colour, speed" in error_of(resp, 400)["message"]
    resp = client.post("/v1/jobs", json={"type": "classify", "source": 42})
    assert "source (expected str)" in error_of(resp, 400)["message"]
    resp = client.post("/v1/jobs", json={"type": "classify"})
    assert "source" in error_of(resp, 400)["message"]
    resp = client.post("/v1/jobs", json=["classify"])
    assert "JSON object" in error_of(resp, 400)["message"]
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(base_dir),
                                          "priority": "urgent"})
    assert "priority must be one of high, normal, low" in error_of(resp, 400)["message"]


def test_unusable_sources_are_422(client, base_dir):
    assert "outside the allowed roots" in error_of(
        client.post("/v1/jobs", json={"type": "classify", "source": "/etc"}), 422)["message"]
    assert "does not exist" in error_of(
        client.post("/v1/jobs", json={"type": "classify", "source": str(base_dir / "nope")}),
        422)["message"]
    assert "unsupported source" in error_of(
        client.post("/v1/jobs", json={"type": "classify", "source": "ftp://x/y"}), 422)["message"]


def test_deeply_nested_json_is_a_400_not_a_500(client):
    body = '{"type":"classify","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = client.post("/v1/jobs", data=body, content_type="application/json")
    assert error_of(resp, 400)["message"] == "the body is not valid JSON"


def test_a_json_body_over_its_limit_is_a_413_before_parsing(settings, model_version):
    from api import create_app

    small = create_app(settings.replace(max_json_bytes=1000)).test_client()
    big = '{"type": "classify", "urls": [' + ",".join(['"http://x/a.jpg"'] * 200) + "]}"
    resp = small.post("/v1/jobs", data=big, content_type="application/json")
    assert "FACESENSE_MAX_JSON_BYTES" in error_of(resp, 413)["message"]
    assert error_of(small.post("/v1/models/v1/promote", data=big,
                               content_type="application/json"), 413)


@pytest.fixture
def local_client(settings, tmp_path):
    """The API on a local-folder store (as `facesense up` runs it): file names have limits."""
    from api import create_app

    return create_app(settings.replace(store=str(tmp_path / "store"))).test_client()


@pytest.mark.parametrize("job_id", ["f" * 300, "a" * 5000, "x" * 100])
@pytest.mark.parametrize("route", ["", "/results", "/results?format=csv"])
def test_a_long_or_odd_job_id_is_a_404_on_every_route(local_client, job_id, route):
    resp = local_client.get(f"/v1/jobs/{job_id}{route}")
    assert error_of(resp, 404)["code"] == "job_not_found"


def test_a_long_job_id_is_a_404_for_cancel_and_the_gallery(local_client):
    long_id = "f" * 5000
    assert error_of(local_client.post(f"/v1/jobs/{long_id}/cancel"), 404)["code"] == "job_not_found"
    assert local_client.get(f"/ui/api/jobs/{long_id}/gallery").status_code == 404


def test_unknown_job_and_model_are_404(client, base_dir):
    assert error_of(client.get("/v1/jobs/0123456789ab"), 404)["code"] == "job_not_found"
    assert error_of(client.get("/v1/jobs/..%2Fetc"), 404)
    assert error_of(client.get("/v1/models/v-missing"), 404)["code"] == "model_not_found"
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(base_dir),
                                         "model": "no-such-version"})
    assert error_of(resp, 404)["code"] == "model_not_found"
    assert error_of(client.get("/no/such/route"), 404)


def test_scoring_with_no_model_fails_at_once_with_a_hint(settings, base_dir, unique):
    empty = create_app(settings.replace(store=f"{settings.store}-empty-{unique}")).test_client()
    body = error_of(empty.post("/v1/jobs", json={"type": "classify", "source": str(base_dir)}),
                    404)
    assert "facesense models import" in body["message"]


def test_oversized_upload_is_413(settings):
    small = create_app(settings.replace(max_upload_bytes=1000)).test_client()
    resp = small.post("/v1/jobs", data={"type": "classify",
                                        "files": (io.BytesIO(b"x" * 5000), "a.jpg")})
    assert "1000-byte limit" in error_of(resp, 413)["message"]


def test_results_before_the_job_finishes_are_409(client, model_version, redis_url, settings):
    import redis

    from facesense.state.records import JobRecords
    from facesense.storage import store_from_settings

    jobs = JobRecords(redis.Redis.from_url(redis_url), store_from_settings(settings))
    job = jobs.create("classify", source="store:none", model="production")
    assert "no results yet" in error_of(client.get(f"/v1/jobs/{job['id']}/results"), 409)[
        "message"]


def test_health_reports_redis_and_store(client, settings):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok", "redis": "ok",
                                                           "store": "ok"}
    down = create_app(settings.replace(redis_url="redis://127.0.0.1:1/0")).test_client()
    resp = down.get("/healthz")
    assert resp.status_code == 503 and resp.get_json()["redis"].startswith("error")


def test_models_lists_versions_and_aliases(client, model_version):
    data = client.get("/v1/models").get_json()
    assert model_version["version"] in [v["version"] for v in data["versions"]]
    assert data["aliases"]["production"]["version"] == model_version["version"]
    one = client.get(f"/v1/models/{model_version['version']}").get_json()
    assert one["classes"] == ["happy", "sad"] and "production" in one["aliases"]
    assert len(one["weights_sha256"]) == 64


@pytest.mark.slow
def test_multipart_files_are_stored_then_scored(client, worker):
    files = [(io.BytesIO(encode(make_image(__import__("random").Random(i), (120, 90)), "JPEG")),
              f"ad{i % 2}/face{i}.jpg") for i in range(4)]
    resp = client.post("/v1/jobs", data={"type": "classify", "files": files})
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["source"] == f"store:jobs/{job['id']}/inputs"
    record = wait_for_job(client, job["id"])
    assert record["status"] == "succeeded"
    assert {g: v["images"] for g, v in record["summary"]["groups"].items()} == {"ad0": 2, "ad1": 2}


@pytest.mark.slow
def test_a_zip_upload_is_unpacked_and_scored(client, worker, tmp_path):
    make_folder(tmp_path / "z", 6, groups=("a", "b"), max_side=200, corrupt=False)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted((tmp_path / "z").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(tmp_path / "z").as_posix())
    buf.seek(0)
    resp = client.post("/v1/jobs", data={"type": "classify", "files": (buf, "batch.zip")})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded" and record["progress"]["total"] == 6  # README skipped


def test_job_list_is_newest_first_and_pagination_is_clamped(client, base_dir, unique):
    folder = base_dir / f"list-{unique}"
    make_folder(folder, 2, max_side=100, corrupt=False)
    for _ in range(2):
        assert client.post("/v1/jobs", json={"type": "classify", "source": str(folder)}
                           ).status_code == 202
    data = client.get("/v1/jobs?limit=100000").get_json()
    assert data["limit"] == 200
    created = [j["created_at"] for j in data["jobs"]]
    assert created == sorted(created, reverse=True) and len(created) >= 2
    assert error_of(client.get("/v1/jobs?limit=abc"), 400)


@pytest.mark.slow
def test_retry_rescores_only_the_failed_images(client, worker, base_dir, unique):
    folder = base_dir / f"retry-{unique}"
    make_folder(folder, 4, max_side=200)  # + truncated.jpg, notes.png, empty.jpeg
    first = wait_for_job(client, client.post("/v1/jobs", json={
        "type": "classify", "source": str(folder), "priority": "low"}).get_json()["id"])
    assert first["progress"]["failed"] == 3 and first["priority"] == "low"
    # The user fixes one of the broken files, then retries.
    fixed = folder / "variant_a" / "truncated.jpg"
    fixed.write_bytes(encode(make_image(__import__("random").Random(7), (90, 90)), "JPEG"))
    resp = client.post(f"/v1/jobs/{first['id']}/retry")
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["retry_of"] == first["id"]
    assert resp.get_json()["priority"] == "low"  # the retry keeps the job's priority
    second = wait_for_job(client, resp.get_json()["id"])
    assert second["status"] == "succeeded" and second["model_version"] == first["model_version"]
    assert (second["progress"]["total"], second["progress"]["failed"]) == (3, 2)
    rows = client.get(f"/v1/jobs/{second['id']}/results").get_json()["rows"]
    assert {r["image"] for r in rows if not r["error"]} == {"variant_a/truncated.jpg"}
    # Nothing failed in the retry's own successes: a job without failures can't be retried.
    clean = wait_for_job(client, client.post("/v1/jobs", json={
        "type": "classify", "source": str(folder / "variant_b")}).get_json()["id"])
    assert error_of(client.post(f"/v1/jobs/{clean['id']}/retry"), 409)
    assert error_of(client.post("/v1/jobs/0123456789ab/retry"), 404)


def test_every_answer_refuses_sniffing_and_framing_and_the_page_has_a_csp(client):
    page = client.get("/")  # the dashboard
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for resp in (page, client.get("/v1/models"), client.get("/v1/jobs/0123456789ab")):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"


def test_options_answers_json_with_the_allowed_methods(client):
    resp = client.open("/v1/jobs", method="OPTIONS")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert {"GET", "POST"} <= set(resp.get_json()["allow"])
