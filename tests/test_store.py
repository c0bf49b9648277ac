"""The storage protocol: the same behaviour tests on a local folder and on a real S3 server."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from facesense.errors import ObjectNotFound, SourceError
from facesense.storage import LocalStore, S3Store, open_store
from tests.conftest import BUCKET

BAD_KEYS = ["../x", "/abs", "a//b", "", "a/./b", "a/../b", "a\\b", "a/"]


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, unique):
    """A fresh, empty store: a temp folder, or a unique prefix in the test bucket."""
    if request.param == "local":
        return LocalStore(tmp_path)
    return S3Store(BUCKET, f"t/{unique}", endpoint_url=request.getfixturevalue("s3_endpoint"))


def endpoint_of(store) -> str:
    """The S3 endpoint a store talks to ('' for a local store)."""
    return store.client.meta.endpoint_url if isinstance(store, S3Store) else ""


# --- put / get / stream -------------------------------------------------------------------


def test_put_then_get_returns_the_same_bytes(store):
    data = bytes(range(256)) * 3
    store.put("a/b/c.bin", data)
    assert store.get("a/b/c.bin") == data


def test_put_overwrites_an_existing_object(store):
    store.put("k.txt", b"old")
    store.put("k.txt", b"new")
    assert store.get("k.txt") == b"new"


def test_empty_object_roundtrips(store):
    store.put("empty", b"")
    assert store.exists("empty")
    assert store.get("empty") == b""


def test_put_stream_writes_a_multi_megabyte_file_object(store, tmp_path_factory):
    # Just over 8 MiB, so boto3 switches to a multipart upload on S3.
    data = os.urandom((8 << 20) + 12345)
    source = tmp_path_factory.mktemp("source") / "blob.bin"
    source.write_bytes(data)
    with source.open("rb") as f:
        store.put_stream("big/blob.bin", f)
    assert store.get("big/blob.bin") == data


def test_open_streams_the_object_in_chunks(store):
    data = os.urandom(3 << 20)
    store.put("stream.bin", data)
    chunks = []
    with store.open("stream.bin") as body:
        assert body.read(10) == data[:10]
        while chunk := body.read(1 << 18):
            chunks.append(chunk)
    assert b"".join(chunks) == data[10:]
    assert len(chunks) > 1


def test_open_from_a_byte_offset_reads_the_rest(store):
    store.put("a/ranged.bin", bytes(range(256)) * 4)
    with store.open("a/ranged.bin", start=1000) as stream:
        assert stream.read() == (bytes(range(256)) * 4)[1000:]
    with store.open("a/ranged.bin", start=0) as stream:
        assert len(stream.read()) == 1024


def test_folders_names_only_the_folders_directly_under_a_prefix(store):
    for key in ("m/v1/a.json", "m/v1/deep/b.bin", "m/v2/c.json", "m/top.json", "n/x.json"):
        store.put(key, b"x")
    assert list(store.folders("m")) == ["v1", "v2"]
    assert list(store.folders()) == ["m", "n"]
    assert list(store.folders("missing")) == []


def test_get_of_a_missing_key_raises_object_not_found(store):
    with pytest.raises(ObjectNotFound):
        store.get("nope/missing.jpg")


def test_open_of_a_missing_key_raises_object_not_found(store):
    with pytest.raises(ObjectNotFound):
        store.open("missing.jpg")


# --- list ---------------------------------------------------------------------------------


# No name extends a folder's name with a character below '/' ('a-b', 'a.jpg' beside 'a/'):
# SeaweedFS lists a folder before such names, unlike AWS S3 (see the local-only test below).
KEYS = ["b.jpg", "a/x.jpg", "a/y/z.jpg", "a0.jpg", "ab.jpg", "c/d/e/f.png", "A.jpg", "d.jpg"]


def test_list_is_recursive_sorted_and_relative_to_the_store(store):
    for key in KEYS:
        store.put(key, key.encode())
    assert list(store.list()) == sorted(KEYS)


def test_list_with_a_prefix_lists_only_that_folder(store):
    for key in KEYS:
        store.put(key, key.encode())
    # Keys stay relative to the store, and "a" means the folder, not "a0.jpg" or "a-b.jpg".
    assert list(store.list("a")) == ["a/x.jpg", "a/y/z.jpg"]
    assert list(store.list("a/y")) == ["a/y/z.jpg"]
    assert list(store.list("c/d")) == ["c/d/e/f.png"]


def test_list_of_a_missing_prefix_or_empty_store_is_empty(store):
    assert list(store.list()) == []
    store.put("a/x.jpg", b"x")
    assert list(store.list("nope")) == []


# --- exists / delete ----------------------------------------------------------------------


def test_exists_is_true_only_for_stored_objects(store):
    store.put("a/x.jpg", b"x")
    assert store.exists("a/x.jpg")
    assert not store.exists("a/missing.jpg")
    assert not store.exists("a")  # a folder is not an object


def test_delete_removes_the_object(store):
    store.put("a/x.jpg", b"x")
    store.put("a/y.jpg", b"y")
    store.delete("a/x.jpg")
    assert not store.exists("a/x.jpg")
    assert list(store.list()) == ["a/y.jpg"]
    with pytest.raises(ObjectNotFound):
        store.get("a/x.jpg")


def test_delete_of_a_missing_key_is_fine(store):
    store.delete("never/there.jpg")
    assert not store.exists("never/there.jpg")


# --- child / uri_for ----------------------------------------------------------------------


def test_child_sees_and_writes_under_its_prefix(store):
    store.put("jobs/1/in/a.jpg", b"a")
    child = store.child("jobs/1")
    assert child.get("in/a.jpg") == b"a"
    assert list(child.list()) == ["in/a.jpg"]
    child.put("out/r.json", b"{}")
    assert store.get("jobs/1/out/r.json") == b"{}"
    assert list(store.child("jobs/1/in").list()) == ["a.jpg"]


def test_child_uri_is_the_parent_uri_for_its_prefix(store):
    assert store.child("x/y").uri == store.uri_for("x/y")


def test_child_refuses_an_escaping_prefix(store):
    with pytest.raises(ValueError):
        store.child("../other")


def test_uri_for_names_the_object_under_the_store_uri(store):
    assert store.uri_for("a/b.jpg") == store.uri + "/a/b.jpg"


def test_store_reopened_from_its_uri_sees_the_same_objects(store):
    store.put("a/b.jpg", b"payload")
    again = open_store(store.uri, endpoint_url=endpoint_of(store))
    assert again.get("a/b.jpg") == b"payload"
    assert list(again.list()) == ["a/b.jpg"]


# --- key validation -----------------------------------------------------------------------


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused(store, key):
    with pytest.raises(ValueError):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        store.exists(key)
    with pytest.raises(ValueError):
        store.delete(key)
    with pytest.raises(ValueError):
        store.uri_for(key)
    assert list(store.list()) == []


# --- open_store ---------------------------------------------------------------------------


def test_open_store_s3_url_writes_under_the_bucket_and_prefix(s3_endpoint, s3, unique):
    store = open_store(f"s3://{BUCKET}/t/{unique}/os", endpoint_url=s3_endpoint)
    assert isinstance(store, S3Store)
    assert store.uri == f"s3://{BUCKET}/t/{unique}/os"
    store.put("g/a.jpg", b"abc")
    body = s3.get_object(Bucket=BUCKET, Key=f"t/{unique}/os/g/a.jpg")["Body"].read()
    assert body == b"abc"
    assert store.uri_for("g/a.jpg") == f"s3://{BUCKET}/t/{unique}/os/g/a.jpg"


def test_open_store_file_url_and_plain_path_are_the_same_folder(tmp_path):
    by_url = open_store((tmp_path / "st").as_uri())
    by_path = open_store(str(tmp_path / "st"))
    assert isinstance(by_url, LocalStore) and isinstance(by_path, LocalStore)
    by_url.put("g/a.jpg", b"abc")
    assert by_path.get("g/a.jpg") == b"abc"
    assert (tmp_path / "st" / "g" / "a.jpg").read_bytes() == b"abc"
    assert by_url.uri == by_path.uri == (tmp_path / "st").resolve().as_uri()


@pytest.mark.parametrize("url", ["http://example.com/x", "ftp://h/p", "s3://", "s3:///prefix"])
def test_open_store_refuses_unsupported_or_bucketless_urls(url):
    with pytest.raises(SourceError):
        open_store(url)


# --- LocalStore specifics -----------------------------------------------------------------


def all_files(root: Path) -> list[Path]:
    """Every file under root, hidden ones included."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_local_files_are_not_world_readable(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b/c.json", b"{}")
    with io.BytesIO(b"streamed") as f:
        store.put_stream("d.bin", f)
    for name in ("a/b/c.json", "d.bin"):
        assert (tmp_path / name).stat().st_mode & 0o007 == 0
    assert (tmp_path / "a" / "b").stat().st_mode & 0o007 == 0


def test_every_folder_a_local_write_creates_is_0750_as_the_readme_says(tmp_path):
    # Given a store whose root does not exist yet, under the usual umask
    old = os.umask(0o022)
    try:
        store = LocalStore(tmp_path / "store")
        # When an upload lands deep under a new job's folder
        store.put("jobs/abc123/inputs/ad1/face.jpg", b"x")
    finally:
        os.umask(old)
    # Then the store root, jobs/, jobs/<id> and every folder below it are 0750, the file 0600
    for folder in ("store", "store/jobs", "store/jobs/abc123", "store/jobs/abc123/inputs",
                   "store/jobs/abc123/inputs/ad1"):
        assert oct((tmp_path / folder).stat().st_mode & 0o777) == oct(0o750), folder
    assert (tmp_path / "store/jobs/abc123/inputs/ad1/face.jpg").stat().st_mode & 0o777 == 0o600


def test_local_writes_leave_no_temp_files(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/x.jpg", b"x")
    store.put("a/x.jpg", b"x2")
    with io.BytesIO(b"y" * 100_000) as f:
        store.put_stream("a/y.jpg", f)
    assert all_files(tmp_path) == [tmp_path / "a" / "x.jpg", tmp_path / "a" / "y.jpg"]


def test_local_list_is_in_full_key_order_like_s3(tmp_path):
    # A folder's files do not all come before its sub-folders: 'a-b.jpg' < 'a/x.jpg' < 'a0.jpg'.
    keys = ["b.jpg", "a/x.jpg", "a-b.jpg", "a.jpg", "a0.jpg", "a/y/z.jpg", "a/y.jpg", "_.jpg"]
    store = LocalStore(tmp_path)
    for key in keys:
        store.put(key, b"x")
    assert list(store.list()) == sorted(keys)


def test_local_list_does_not_follow_symlinked_folders(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"s")
    store = LocalStore(tmp_path / "st")
    store.put("a/x.jpg", b"x")
    (tmp_path / "st" / "link").symlink_to(outside, target_is_directory=True)
    assert list(store.list()) == ["a/x.jpg"]


def test_local_list_skips_leftover_temp_files(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/x.jpg", b"x")
    (tmp_path / "a" / ".tmp-crashed").write_bytes(b"half")
    assert list(store.list()) == ["a/x.jpg"]


class FailingStream:
    """A stream that yields some bytes, then fails like a dropped upload."""

    def __init__(self):
        self.calls = 0

    def read(self, size=-1):
        self.calls += 1
        if self.calls == 1:
            return b"partial data"
        raise OSError("connection reset")


def test_local_failed_write_leaves_no_partial_object(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(OSError, match="connection reset"):
        store.put_stream("a/new.jpg", FailingStream())
    assert not store.exists("a/new.jpg")
    assert list(store.list()) == []
    assert all_files(tmp_path) == []


def test_local_failed_overwrite_keeps_the_old_object(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/x.jpg", b"old")
    with pytest.raises(OSError):
        store.put_stream("a/x.jpg", FailingStream())
    assert store.get("a/x.jpg") == b"old"
    assert all_files(tmp_path) == [tmp_path / "a" / "x.jpg"]


def test_s3_without_credentials_is_a_permanent_source_error(s3_endpoint, tmp_path):
    import subprocess
    import sys

    # A fresh process: boto3 caches the credentials it found in the one running the tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    code = ("from facesense.errors import SourceError, TransientError\n"
            "from facesense.storage import S3Store\n"
            f"store = S3Store({BUCKET!r}, 'nocreds', endpoint_url={s3_endpoint!r})\n"
            "try:\n    store.get('a.jpg')\n"
            "except SourceError as e:\n"
            "    print('permanent' if not isinstance(e, TransientError) else 'transient', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.startswith("permanent") and "no S3 credentials" in out.stdout, out
