"""Uploads under attack: zip bombs, bad file names, duplicates, many parts (hardening issue,
items 3, 7, 11 and 12), on the real Redis and on a real store (S3, or a local folder)."""

from __future__ import annotations

import io
import random
import zipfile
from contextlib import redirect_stderr, redirect_stdout

import pytest

from facesense.errors import BadRequest, PayloadTooLarge
from facesense.inputs.uploads import save_uploads, save_zip
from facesense.settings import Settings
from facesense.storage import LocalStore
from tests.conftest import BUCKET
from tests.servers import serving

BAD_NAMES = {
    "nul": "v1/evil\0.jpg",
    "long": "x" * 5000 + ".jpg",
    "deep": "d/" * 2000 + "evil.jpg",
}


def input_keys(s3, settings) -> set[str]:
    """Every uploaded input in the test bucket (any job)."""
    keys, token = set(), None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=BUCKET, Prefix="store/jobs/", **extra)
        keys |= {o["Key"] for o in page.get("Contents", []) if "/inputs/" in o["Key"]}
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def files_under(folder) -> list[str]:
    """Every file under a folder (temp files included), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def post_files(client, names: list[str], data: bytes = b"\xff\xd8\xff") -> object:
    """A multipart upload of one small file per name."""
    files = [(io.BytesIO(data), name) for name in names]
    return client.post("/v1/jobs", data={"type": "classify", "files": files})


@pytest.fixture
def local_client(settings, model_version, tmp_path):
    """The API on the real Redis with a local folder as its store (the model copied in)."""
    from api import create_app
    from facesense.registry import Registry
    from facesense.storage import store_from_settings

    local = settings.replace(store=str(tmp_path / "store"))
    registry, main = Registry(store_from_settings(local)), store_from_settings(settings)
    for key in main.list(f"models/{model_version['version']}"):
        registry.store.put(key, main.get(key))
    registry.promote(model_version["version"], "production", by="tests")
    return create_app(local).test_client(), tmp_path / "store"


# --- item 3: a zip bomb of many members, each under the per-member floor --------------------


@pytest.fixture(scope="module")
def many_mib_of_zeros() -> bytes:
    """The issue's repro: 1,000 members of 1 MiB of zeros, about 1.1 MB deflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(1000):
            z.writestr(f"b{i}.jpg", b"\0" * (1 << 20))
    return buf.getvalue()


def test_a_bomb_of_small_members_is_refused_before_writing(many_mib_of_zeros, tmp_path):
    with pytest.raises(PayloadTooLarge, match=r"the \.zip expands \d+x in all .* zip bomb"):
        save_zip(io.BytesIO(many_mib_of_zeros), LocalStore(tmp_path / "inputs"), Settings())
    assert files_under(tmp_path) == []


def test_a_bomb_of_small_members_is_a_413_and_nothing_reaches_the_store(client, settings, s3,
                                                                        many_mib_of_zeros):
    before = input_keys(s3, settings)
    resp = client.post("/v1/jobs", data={"type": "classify",
                                         "files": (io.BytesIO(many_mib_of_zeros), "b.zip")})
    assert resp.status_code == 413, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "too_large" and "FACESENSE_MAX_ZIP_RATIO" in error["message"]
    assert input_keys(s3, settings) == before


def test_an_archive_of_images_that_barely_compress_is_accepted(tmp_path):
    rng = random.Random(0)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):  # 2 MiB each, like photos: deflate gains nothing
            z.writestr(f"v1/{i}.jpg", rng.randbytes(2 << 20))
    archive.seek(0)
    assert save_zip(archive, LocalStore(tmp_path), Settings(max_zip_ratio=2)) == 3


# --- item 7: names that can't be stored are a 400 naming the file, with nothing left -------


@pytest.mark.parametrize("kind", sorted(BAD_NAMES))
def test_a_bad_file_name_is_a_400_naming_it_and_nothing_is_stored(client, settings, s3, kind):
    before = input_keys(s3, settings)
    resp = post_files(client, ["ok.jpg", BAD_NAMES[kind]])
    assert resp.status_code == 400, resp.get_json()
    message = resp.get_json()["error"]["message"]
    assert repr(BAD_NAMES[kind][:20])[:-1] in message
    assert input_keys(s3, settings) == before


@pytest.mark.parametrize("kind", sorted(BAD_NAMES))
def test_a_bad_file_name_leaves_no_partial_upload_on_a_local_store(local_client, kind):
    client, store = local_client
    resp = post_files(client, ["ok.jpg", BAD_NAMES[kind]])
    assert resp.status_code == 400, resp.get_json()
    assert [f for f in files_under(store) if f.startswith("jobs/")] == []


def test_a_bad_member_name_in_a_zip_is_a_400_too(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok.jpg", b"a")
        z.writestr("d/" * 100 + "evil.jpg", b"b")  # short, but 100 folders deep
    archive.seek(0)
    with pytest.raises(BadRequest, match="nested too deep"):
        save_zip(archive, LocalStore(tmp_path), Settings())
    assert files_under(tmp_path) == []


def test_an_upload_whose_job_cannot_be_recorded_is_removed(settings, model_version, tmp_path):
    # Given the API with its store but no Redis (nothing listens on port 1)
    from api import create_app
    from facesense.registry import Registry
    from facesense.storage import store_from_settings

    local = settings.replace(store=str(tmp_path / "store"), redis_url="redis://127.0.0.1:1/0")
    main, registry = store_from_settings(settings), Registry(store_from_settings(local))
    for key in main.list(f"models/{model_version['version']}"):
        registry.store.put(key, main.get(key))
    registry.promote(model_version["version"], "production", by="tests")
    # When an upload arrives: its files are stored, then its job can't be recorded
    resp = post_files(create_app(local).test_client(), ["v1/a.jpg", "v2/b.jpg"])
    # Then the answer is a 503 and no file of it is left
    assert resp.status_code == 503, resp.get_json()
    assert [f for f in files_under(tmp_path / "store") if f.startswith("jobs/")] == []


def test_a_failed_write_leaves_no_temp_file(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(OSError):
        store.put("v1/" + "x" * 300 + ".jpg", b"a")  # the rename fails: name too long
    assert files_under(tmp_path) == []


def test_a_write_failing_mid_upload_removes_what_was_written(tmp_path):
    target = LocalStore(tmp_path)
    (tmp_path / "v2").write_bytes(b"in the way")  # 'v2/b.jpg' can't get its folder
    with pytest.raises(OSError):
        save_uploads([("a.jpg", io.BytesIO(b"a")), ("v2/b.jpg", io.BytesIO(b"b"))], target,
                     Settings())
    assert files_under(tmp_path) == ["v2"]


# --- item 12: duplicate names, one rule for files and zip members --------------------------


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the zip holds them on purpose
@pytest.mark.parametrize("names, named", [
    (["ok.jpg", "ok.jpg"], "'ok.jpg' appears more than once"),
    (["v1/ok.jpg", "./v1//ok.jpg"], "'./v1//ok.jpg' appears more than once"),
    (["a.jpg", "a.jpg/b.jpg"], "'a.jpg' is also a folder"),
])
def test_duplicate_names_are_refused_alike_in_files_and_zips(client, settings, s3, names,
                                                             named):
    before = input_keys(s3, settings)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name in names:
            z.writestr(name, b"\xff\xd8\xff")
    archive.seek(0)
    for resp, what in ((post_files(client, names), "upload file name"),
                       (client.post("/v1/jobs", data={"type": "classify",
                                                      "files": (archive, "a.zip")}),
                        ".zip member")):
        assert resp.status_code == 400, resp.get_json()
        assert f"{what} {named}" in resp.get_json()["error"]["message"]
    assert input_keys(s3, settings) == before


# --- item 11: the part limit is a setting with an honest message; the CLI zips big folders --


def test_too_many_parts_is_a_413_naming_the_part_limit(settings, model_version):
    from api import create_app

    small = create_app(settings.replace(max_form_parts=3)).test_client()
    resp = post_files(small, [f"{i}.jpg" for i in range(5)])
    assert resp.status_code == 413
    error = resp.get_json()["error"]
    assert error["code"] == "too_many_parts"
    assert "more than 3 parts" in error["message"]
    assert "FACESENSE_MAX_FORM_PARTS" in error["message"] and ".zip" in error["message"]
    body = create_app(settings.replace(max_upload_bytes=100)).test_client()
    resp = post_files(body, ["a.jpg"], data=b"x" * 200)
    assert resp.status_code == 413
    assert "FACESENSE_MAX_UPLOAD_BYTES" in resp.get_json()["error"]["message"]


def test_the_cli_uploads_a_folder_over_the_part_limit_as_one_zip(settings, model_version, s3,
                                                                 tmp_path):
    from api import create_app
    from cli.main import main
    from facesense.client.submit import ZIP_OVER

    # Given a server allowing fewer parts than a folder holds files
    folder = tmp_path / "big"
    names = [f"v{i % 3}/{i}.jpg" for i in range(ZIP_OVER + 50)]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\xff\xd8\xff" + name.encode())
    before = input_keys(s3, settings)
    with serving(create_app(settings.replace(max_form_parts=ZIP_OVER))) as url:
        out = io.StringIO()
        # When the CLI uploads the folder
        with redirect_stdout(out), redirect_stderr(io.StringIO()):
            assert main(["--api", url, "submit", "--upload", str(folder)]) == 0
    # Then one job holds every file under its own name (its group kept)
    job_id = out.getvalue().split()[0]
    stored = {k.split("/inputs/", 1)[1] for k in input_keys(s3, settings) - before
              if f"/{job_id}/" in k}
    assert stored == set(names)
