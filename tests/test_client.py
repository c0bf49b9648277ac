"""facesense.client against the real API over HTTP (werkzeug in a thread) and the real worker."""

from __future__ import annotations

import csv
import io
import random
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from api import create_app
from cli.main import main
from facesense.client import ApiError, Client
from facesense.client.results import _flat
from tests.imagegen import encode, make_folder, make_image
from tests.loopback import Loopback, respond
from tests.servers import serving

pytestmark = pytest.mark.slow

GOOD, CORRUPT = 9, 3  # imagegen adds 3 corrupt files to the first group


@pytest.fixture(scope="module")
def server(settings, model_version, worker):
    """The API on a real HTTP server on a free loopback port; the session worker behind it."""
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def folder(base_dir):
    """GOOD small images in two groups, plus CORRUPT unreadable ones."""
    root = base_dir / "client-folder"
    make_folder(root, GOOD, max_side=200)
    return root


@pytest.fixture(scope="module")
def finished(server, folder):
    """A scoring job submitted and followed by the client, with every progress record seen."""
    api = Client(server)
    job = api.submit(str(folder))
    assert job["status"] == "queued"
    seen: list[dict] = []
    record = api.wait(job["id"], every=0.05, on_update=seen.append, timeout=120)
    return record, seen


def test_wait_calls_back_with_progress_until_the_job_is_done(finished):
    record, seen = finished
    assert record["status"] == "succeeded", record
    done = [r["progress"]["done"] for r in seen]
    assert done == sorted(done)  # never goes back
    assert done[-1] == record["progress"]["total"] == GOOD + CORRUPT
    assert seen[-1] == record
    assert record["progress"]["failed"] == CORRUPT


def test_rows_walk_every_page_and_the_csv_streams_the_same_images(server, finished):
    record, _ = finished
    api = Client(server)
    rows = list(api.rows(record["id"], page=5))  # 12 rows: pages of 5, 5, 2
    assert len(rows) == GOOD + CORRUPT
    assert len({r["image"] for r in rows}) == len(rows)
    assert sum(1 for r in rows if r["error"]) == CORRUPT
    chunks = list(api.csv(record["id"], chunk_size=64))
    assert len(chunks) > 1 and all(isinstance(c, bytes) for c in chunks)  # streamed, in pieces
    table = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert {r["image"] for r in table} == {r["image"] for r in rows}
    out = io.BytesIO()
    assert api.save_csv(record["id"], out) == len(b"".join(chunks))


def test_summary_and_results_frame(server, finished):
    record, _ = finished
    api = Client(server)
    summary = api.summary(record["id"])
    assert summary["groups"].keys() == record["summary"]["groups"].keys()
    happy = summary["groups"]["variant_b"]["labels"]["happy"]
    assert set(happy) >= {"count", "share", "ci95"} and "comparisons" in summary
    out = io.BytesIO()
    api.save_summary_csv(record["id"], out)
    assert out.getvalue().decode().splitlines()[0] == "group,label,count,share,ci95_low,ci95_high"
    frame = api.results_frame(record["id"])
    assert len(frame) == GOOD + CORRUPT
    assert list(frame.columns) == ["image", "group", "label", "confidence", "error", "p_happy",
                                   "p_sad"]
    assert frame["error"].notna().sum() == CORRUPT
    assert (frame[frame["group"] == "variant_b"]["label"] == "happy").sum() == happy["count"]


def test_results_frame_says_how_to_get_pandas_when_it_is_missing(server, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed: import fails
    with pytest.raises(ImportError, match=r"pip install 'facesense\[pandas\]'"):
        Client(server).results_frame("anything")


def test_a_manifests_meta_becomes_columns():
    row = {"image": "a.jpg", "group": "B", "label": "sad", "confidence": 0.7,
           "probs": {"happy": 0.3, "sad": 0.7}, "error": None,
           "meta": {"participant": "p7", "group": "x"}}
    assert _flat(row) == {"image": "a.jpg", "group": "B", "label": "sad", "confidence": 0.7,
                          "error": None, "p_happy": 0.3, "p_sad": 0.7, "participant": "p7",
                          "meta_group": "x"}


def test_retry_scores_only_the_failed_images_and_finished_jobs_refuse_cancel(server, finished):
    record, _ = finished
    api = Client(server)
    again = api.retry(record["id"])
    assert again["retry_of"] == record["id"]
    redone = api.wait(again["id"], every=0.1, timeout=120)
    assert redone["status"] == "succeeded"
    assert redone["progress"]["total"] == redone["progress"]["failed"] == CORRUPT
    with pytest.raises(ApiError) as e:
        api.cancel(record["id"])
    assert (e.value.status, e.value.code) == (409, "conflict")


def test_uploads_and_urls_are_jobs_too(server, folder):
    api = Client(server)
    uploaded = api.upload([folder / "variant_b"])
    jpeg = encode(make_image(random.Random(3), (120, 90)), "JPEG")
    with Loopback() as images:
        images.routes["/ad/face.jpg"] = respond(200, jpeg, {"Content-Type": "image/jpeg"})
        by_url = api.submit(urls=[images.url("/ad/face.jpg"),
                                  {"url": images.url("/missing.jpg"), "group": "b"}])
        from_urls = api.wait(by_url["id"], every=0.1, timeout=120)
    assert from_urls["status"] == "succeeded"
    rows = {r["image"]: r for r in api.rows(by_url["id"])}
    assert rows[images.url("/ad/face.jpg")]["label"] in ("happy", "sad")
    assert "http 404" in rows[f"b/{images.url('/missing.jpg')}"]["error"]
    record = api.wait(uploaded["id"], every=0.1, timeout=120)
    assert record["status"] == "succeeded"
    assert {r["group"] for r in api.rows(uploaded["id"])} == {""}  # a folder's files, its groups
    assert record["progress"]["total"] == len(list((folder / "variant_b").glob("*")))


def test_train_cancel_models_and_promote(server, folder, model_version, unique):
    api = Client(server)
    with pytest.raises(ApiError) as e:
        api.train(str(folder), {"epochs": "many"})
    assert e.value.status == 400 and "epochs" in str(e.value)
    job = api.train(str(folder), {"epochs": 1})
    assert job["type"] == "train" and job["status"] == "queued"
    assert api.cancel(job["id"])["status"] == "cancelled"  # no training worker: still queued
    assert model_version["version"] in [m["version"] for m in api.models()["versions"]]
    alias = api.promote(model_version["version"], alias=f"client-{unique}")
    assert alias["version"] == model_version["version"]
    assert f"client-{unique}" in api.model(model_version["version"])["aliases"]
    with pytest.raises(ApiError) as e:
        api.model("no-such-version")
    assert e.value.status == 404


def test_the_cli_goes_through_the_client(server, finished, tmp_path):
    record, _ = finished
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert main(["--api", server, "retry", record["id"], "--wait"]) == 0
        assert main(["--api", server, "results", record["id"], "--csv", str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").read_bytes() == b"".join(Client(server).csv(record["id"]))
    lines = out.getvalue().splitlines()
    assert lines[0] != record["id"] and len(lines[0]) == len(record["id"])  # the new job's id
    assert Client(server).job(lines[0])["retry_of"] == record["id"]
    with pytest.raises(ApiError, match="cannot reach"):
        Client("http://127.0.0.1:9", timeout=2).jobs()
