"""Rights and scopes per API key: who may queue priority high work, and which local folders
and S3 prefixes (on the real S3 server) each key may read, refused as not found outside."""

from __future__ import annotations

import io
import re
import time

import pytest
import redis

from api import create_app
from facesense.errors import ConfigError
from facesense.keys import Grants, Keyring, hash_key, new_key, parse_entries
from tests.conftest import BUCKET
from tests.imagegen import make_folder, upload_folder

ALICE, BOB, CAROL, HIGH, OPS = (new_key() for _ in range(5))


def bearer(key: str) -> dict:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def places(base_dir, s3, tmp_path_factory):
    """Alice's and Bob's folders (under the global roots) and S3 prefixes, each with images."""
    name = tmp_path_factory.mktemp("scopes").name  # unique per run
    out = {}
    for who in ("alice", "bob"):
        folder = base_dir / name / who
        make_folder(folder / "ads", 4, max_side=96, corrupt=False)
        upload_folder(s3, BUCKET, f"{name}/{who}/ads", folder / "ads")
        s3.put_object(Bucket=BUCKET, Key=f"{name}/{who}/m.csv",
                      Body=b"image,viewer\nads/" + next((folder / "ads").rglob("*.png")).relative_to(
                          folder / "ads").as_posix().encode() + b",1\n")
        out[who] = (folder, f"s3://{BUCKET}/{name}/{who}")
    return out


def keys_for(places) -> tuple[str, str]:
    """FACESENSE_API_KEYS and FACESENSE_ADMIN_KEYS: alice and bob scoped to their own folder
    and prefix, carol with the global roots, 'hi' granted priority high, ops an admin."""
    (a_dir, a_s3), (b_dir, b_s3) = places["alice"], places["bob"]
    users = (f"alice:{hash_key(ALICE)}:{a_dir};{a_s3},bob:{hash_key(BOB)}:{b_dir};{b_s3},"
             f"carol:{hash_key(CAROL)},hi:{hash_key(HIGH)}:high")
    return users, f"ops:{hash_key(OPS)}"


@pytest.fixture(scope="module")
def api(settings, redis_url, places, model_version):
    """A keyed app whose jobs are recorded and queued in a Redis database no worker reads."""
    db_url = re.sub(r"/\d+$", "/11", redis_url)
    users, admins = keys_for(places)
    yield create_app(settings.replace(redis_url=db_url, api_keys=users,
                                      admin_keys=admins)).test_client()
    redis.Redis.from_url(db_url).flushdb()


def submit(api, key: str, **body):
    """POST a job as key's holder (a scoring job unless body says otherwise)."""
    return api.post("/v1/jobs", json={"type": "classify", **body}, headers=bearer(key))


def refused_as_missing(resp) -> str:
    """The message of a 404 that tells nothing about the place (asserted)."""
    assert resp.status_code == 404, resp.get_json()
    message = resp.get_json()["error"]["message"]
    assert "may read" in message and "exist" not in message
    return message


def test_priority_high_is_a_right_of_admins_and_of_keys_granted_it(api, places):
    folder = str(places["alice"][0] / "ads")
    resp = submit(api, ALICE, source=folder, priority="high")
    assert resp.status_code == 403 and "high" in resp.get_json()["error"]["message"]
    for key in (HIGH, OPS):
        assert submit(api, key, source=folder, priority="high").status_code == 202
    assert submit(api, ALICE, source=folder, priority="normal").status_code == 202
    form = {"type": "classify", "priority": "high", "files": (io.BytesIO(b"x"), "a.jpg")}
    resp = api.post("/v1/jobs", data=form, headers=bearer(ALICE))
    assert resp.status_code == 403


def test_each_key_reads_its_own_s3_prefix_and_nothing_of_the_others(api, places):
    a_s3, b_s3 = places["alice"][1], places["bob"][1]
    assert submit(api, ALICE, source=f"{a_s3}/ads").status_code == 202
    assert submit(api, BOB, source=f"{b_s3}/ads").status_code == 202
    # Bob's prefix, one that does not exist, and spellings that leave Alice's: one answer
    messages = {refused_as_missing(submit(api, ALICE, source=where)).replace(where, "X")
                for where in (f"{b_s3}/ads", f"{b_s3}/nothing-here", f"{a_s3}/../bob/ads",
                              f"{a_s3}x/ads", f"s3://{BUCKET}")}
    assert len(messages) == 1
    refused_as_missing(submit(api, BOB, source=f"{a_s3}/ads"))
    # a key with no scope keeps today's rules: any prefix outside the store
    assert submit(api, CAROL, source=f"{b_s3}/ads").status_code == 202


def test_each_key_reads_its_own_folder_and_no_link_out_of_it(api, places):
    (a_dir, _), (b_dir, _) = places["alice"], places["bob"]
    resp = submit(api, ALICE, source=str(a_dir / "ads"))
    assert resp.status_code == 202 and resp.get_json()["scope"]["roots"] == [str(a_dir)]
    (a_dir / "to-bob").symlink_to(b_dir / "ads")
    for where in (b_dir / "ads", b_dir / "missing", a_dir / "to-bob", a_dir / ".." / "bob"):
        refused_as_missing(submit(api, ALICE, source=str(where)))
    refused_as_missing(submit(api, ALICE, source=(b_dir / "ads").as_uri()))
    assert submit(api, CAROL, source=str(b_dir / "ads")).status_code == 202


def test_datasets_and_manifests_are_scoped_too(api, places):
    (a_dir, a_s3), (b_dir, b_s3) = places["alice"], places["bob"]
    train = {"type": "train", "params": {"epochs": 1}}
    refused_as_missing(submit(api, ALICE, **train, dataset=f"{b_s3}/ads"))
    refused_as_missing(submit(api, ALICE, **train, dataset=str(b_dir / "ads")))
    assert submit(api, ALICE, **train, dataset=f"{a_s3}/ads").status_code == 202
    # a manifest: in the key's scope, then each of its lines
    refused_as_missing(submit(api, ALICE, manifest=f"{b_s3}/m.csv"))
    refused_as_missing(submit(api, ALICE, manifest=f"{b_s3}/none.csv"))
    assert submit(api, ALICE, manifest=f"{a_s3}/m.csv").status_code == 202
    bobs = next((b_dir / "ads").rglob("*.png"))
    for line in (f"{b_s3}/ads/x.png", str(bobs), bobs.as_uri(), f"{b_dir}/ads/missing.png"):
        manifest = a_dir / "lines.csv"
        manifest.write_text(f"image\n{line}\n")
        message = refused_as_missing(submit(api, ALICE, manifest=str(manifest)))
        assert message.startswith("line 2:")
    upload = {"type": "classify", "manifest": (io.BytesIO(f"image\n{b_s3}/ads/x.png\n".encode()),
                                               "m.csv")}
    refused_as_missing(api.post("/v1/jobs", data=upload, headers=bearer(ALICE)))
    relative = {"type": "classify", "manifest": (io.BytesIO(b"image\nads/x.png\n"), "m.csv")}
    assert api.post("/v1/jobs", data=relative, headers=bearer(ALICE)).status_code == 400
    (a_s3_dir := a_dir / "rel").mkdir(exist_ok=True)
    (a_s3_dir / "m.csv").write_text("image\n../../bob/ads/x.png\n")
    refused_as_missing(submit(api, ALICE, manifest=str(a_s3_dir / "m.csv")))


def test_grants_are_read_from_the_environment_and_the_keys_file(tmp_path):
    digest = hash_key(ALICE)
    assert parse_entries(f"alice:{digest}:high;/srv/a/;s3://b/p", "V") == {
        "alice": (digest, Grants(True, ("/srv/a",), ("s3://b/p",)))}
    keys_file = tmp_path / "keys.env"
    keys_file.write_text(f"FACESENSE_API_KEYS=alice:{digest}:s3://ads/alice\n")
    caller = Keyring({}, {}, path=keys_file).identify(ALICE)
    assert caller.grants.s3 == ("s3://ads/alice",) and not caller.may_use_high
    for bad in ("/srv/../etc", "s3://b//p", "relative", f"{ALICE}"):
        with pytest.raises(ConfigError) as e:
            parse_entries(f"alice:{digest}:{bad}", "V")
        assert ALICE not in str(e.value) and "grant 1" in str(e.value)


def test_a_worker_reads_a_scoped_jobs_files_under_its_keys_roots(settings, places, worker,
                                                                 model_version):
    # Given Alice's folder holding a link to Bob's image (the folder itself is hers)
    (a_dir, _), (b_dir, _) = places["alice"], places["bob"]
    users, admins = keys_for(places)
    app = create_app(settings.replace(api_keys=users, admin_keys=admins)).test_client()
    folder = a_dir / "mixed"
    make_folder(folder, 2, groups=("v",), max_side=96, corrupt=False)
    (folder / "v" / "bobs.png").symlink_to(next((b_dir / "ads").rglob("*.png")))
    # When she scores it, then the worker lists only her own files
    resp = submit(app, ALICE, source=str(folder))
    assert resp.status_code == 202, resp.get_json()
    record = _wait(app, resp.get_json()["id"])
    assert record["status"] == "succeeded" and record["progress"]["total"] == 2, record


def _wait(app, job_id: str) -> dict:
    """The finished record of a job, polled as its owner."""
    deadline = time.monotonic() + 120
    while True:
        record = app.get(f"/v1/jobs/{job_id}", headers=bearer(ALICE)).get_json()
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
