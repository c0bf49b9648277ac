"""Input sources: image keys, groups, local folders under the allowed roots, uploads and zips."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from facesense.errors import BadRequest, ObjectNotFound, PayloadTooLarge, SourceError
from facesense.inputs.keys import group_of, is_image_key
from facesense.inputs.paths import resolve_local
from facesense.inputs.sources import list_images, normalize_source, open_source, upload_source
from facesense.inputs.uploads import save_uploads, save_zip, upload_key
from facesense.settings import Settings
from facesense.storage import LocalStore

EXTENSIONS = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]


@pytest.fixture
def root(tmp_path):
    """The one allowed root, holding a folder of ads."""
    root = tmp_path / "root"
    (root / "ads" / "v1").mkdir(parents=True)
    (root / "ads" / "v1" / "a.jpg").write_bytes(b"a")
    return root


@pytest.fixture
def settings(root) -> Settings:
    return Settings(allowed_roots=(str(root),))


@pytest.fixture
def outside(tmp_path):
    """A folder beside the allowed root, not under it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"s")
    return outside


# --- image keys and groups ----------------------------------------------------------------


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_every_image_extension_counts_in_any_case(ext):
    for variant in (ext, ext.upper(), ext.capitalize()):
        assert is_image_key(f"v1/photo.{variant}")
        assert is_image_key(f"photo.{variant}")


@pytest.mark.parametrize("key", [
    "notes.txt", "v1/data.csv", "photo", "photo.jpg.txt", "v1/.hidden.jpg", ".a.png",
    ".thumbs/a.jpg", "v1/.cache/b.png", "__MACOSX/v1/a.jpg", "v1/__MACOSX/._a.jpg",
])
def test_non_images_hidden_files_and_macos_metadata_are_not_images(key):
    assert not is_image_key(key)


def test_group_is_the_first_level_folder():
    assert group_of("variant-a/img.jpg") == "variant-a"
    assert group_of("variant-a/deeper/img.jpg") == "variant-a"
    assert group_of("img.jpg") == ""


def test_list_images_is_recursive_sorted_and_skips_non_images(tmp_path):
    store = LocalStore(tmp_path)
    for key in ["v2/b.PNG", "v1/a.jpg", "v1/deep/c.webp", "top.gif", "v1/readme.txt",
                "v1/.hidden.jpg", "__MACOSX/v1/a.jpg"]:
        store.put(key, b"x")
    assert list(list_images(store)) == ["top.gif", "v1/a.jpg", "v1/deep/c.webp", "v2/b.PNG"]


# --- local folders ------------------------------------------------------------------------


def test_folder_inside_the_root_resolves_to_its_real_path(root, settings):
    assert resolve_local(str(root / "ads"), settings) == (root / "ads").resolve()
    assert normalize_source(str(root / "ads"), settings) == (root / "ads").resolve().as_uri()


def test_file_url_trailing_slash_and_dot_dot_inside_the_root_are_normalised(root, settings):
    expected = (root / "ads").resolve().as_uri()
    assert normalize_source((root / "ads").as_uri(), settings) == expected
    assert normalize_source(f"{root}/ads/", settings) == expected
    assert normalize_source(f"  {root}/ads/v1/../  ", settings) == expected


def test_the_root_itself_is_allowed(root, settings):
    assert normalize_source(str(root), settings) == root.resolve().as_uri()


def test_folder_outside_the_roots_is_refused(outside, settings):
    with pytest.raises(SourceError, match="outside the allowed roots"):
        normalize_source(str(outside), settings)


def test_sibling_sharing_the_roots_name_prefix_is_refused(root, settings):
    evil = root.parent / (root.name + "-evil")
    evil.mkdir()
    with pytest.raises(SourceError, match="outside"):
        normalize_source(str(evil), settings)


def test_dot_dot_escape_from_the_root_is_refused(root, outside, settings):
    with pytest.raises(SourceError):
        normalize_source(f"{root}/ads/../../outside", settings)
    with pytest.raises(SourceError):
        normalize_source(f"file://{root}/../outside", settings)


def test_symlink_inside_the_root_pointing_outside_is_refused(root, outside, settings):
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SourceError, match="outside"):
        normalize_source(str(root / "link"), settings)


def test_symlink_inside_the_root_pointing_inside_is_allowed(root, settings):
    (root / "alias").symlink_to(root / "ads", target_is_directory=True)
    assert normalize_source(str(root / "alias"), settings) == (root / "ads").resolve().as_uri()


def test_outside_the_roots_a_missing_and_an_existing_folder_get_the_same_answer(outside,
                                                                                settings):
    # No existence oracle: outside the roots, only "outside" is ever said
    answers = []
    for path in (outside, outside / "no-such-folder", outside.parent / "nor-this" / "deep"):
        with pytest.raises(SourceError) as e:
            normalize_source(str(path), settings)
        answers.append(str(e.value).replace(repr(str(path)), "PATH"))
    assert len(set(answers)) == 1 and "outside the allowed roots" in answers[0]


def test_missing_folder_is_refused(root, settings):
    with pytest.raises(SourceError, match="does not exist"):
        normalize_source(str(root / "nope"), settings)


def test_a_file_is_not_a_folder(root, settings):
    with pytest.raises(SourceError, match="not a folder"):
        normalize_source(str(root / "ads" / "v1" / "a.jpg"), settings)


def test_s3_url_passes_through_without_a_trailing_slash(settings):
    assert normalize_source("s3://bucket/some/prefix/", settings) == "s3://bucket/some/prefix"
    assert normalize_source("s3://bucket", settings) == "s3://bucket"


def test_a_source_that_overlaps_the_store_is_refused(root, settings):
    # Every job's uploads, results and thumbnails live in the store: no job may list them.
    local = settings.replace(store=str(root / "store"))
    (root / "store" / "jobs").mkdir(parents=True)
    for source in (str(root), str(root / "store"), str(root / "store" / "jobs")):
        with pytest.raises(SourceError, match=r"overlaps the store|a folder the server writes"):
            normalize_source(source, local)
    assert normalize_source(str(root / "ads"), local) == (root / "ads").resolve().as_uri()
    s3 = settings.replace(store="s3://bucket/prod")
    for source in ("s3://bucket", "s3://bucket/prod/", "s3://bucket/prod/jobs"):
        with pytest.raises(SourceError, match="overlaps the store"):
            normalize_source(source, s3)
    assert normalize_source("s3://bucket/production", s3) == "s3://bucket/production"
    assert normalize_source("s3://other/prod", s3) == "s3://other/prod"


def test_s3_url_without_a_bucket_is_refused(settings):
    with pytest.raises(SourceError):
        normalize_source("s3:///prefix", settings)


@pytest.mark.parametrize("source", ["http://x", "https://example.com/a.jpg", "ftp://h/p"])
def test_other_url_schemes_are_refused(source, settings):
    with pytest.raises(SourceError, match="unsupported source"):
        normalize_source(source, settings)


@pytest.mark.parametrize("source", ["", "   ", None, 42])
def test_empty_or_non_string_source_is_a_bad_request(source, settings):
    with pytest.raises(BadRequest):
        normalize_source(source, settings)


def test_open_source_rechecks_local_folders_against_the_roots(root, outside, settings, tmp_path):
    main = LocalStore(tmp_path / "store")
    store = open_source((root / "ads").resolve().as_uri(), settings, main)
    assert list(store.list()) == ["v1/a.jpg"]
    with pytest.raises(SourceError):
        open_source(outside.as_uri(), settings, main)


def test_open_source_of_an_upload_is_the_main_stores_child(tmp_path, settings):
    main = LocalStore(tmp_path / "main")
    main.put("jobs/j1/inputs/v1/a.jpg", b"a")
    store = open_source(upload_source("jobs/j1/inputs"), settings, main)
    assert list(store.list()) == ["v1/a.jpg"]


# --- upload names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../a.jpg", "v1/../../a.jpg", "..\\a.jpg", "C:\\x\\a.jpg",
                                  "c:/a.jpg", "", "/", "./", None])
def test_unsafe_upload_names_are_refused(name):
    with pytest.raises(BadRequest):
        upload_key(name)


def test_upload_names_keep_their_folders():
    assert upload_key("variant/a.jpg") == "variant/a.jpg"
    assert upload_key("variant\\sub\\a.jpg") == "variant/sub/a.jpg"
    assert upload_key("./variant//a.jpg") == "variant/a.jpg"


def test_absolute_upload_names_become_relative_keys():
    assert upload_key("/abs/a.jpg") == "abs/a.jpg"
    assert upload_key("//etc/x.jpg") == "etc/x.jpg"


def test_absolute_upload_name_is_stored_inside_the_target(tmp_path):
    target = LocalStore(tmp_path / "target")
    save_uploads([("/abs/a.jpg", io.BytesIO(b"a"))], target, Settings())
    assert (tmp_path / "target" / "abs" / "a.jpg").read_bytes() == b"a"
    assert list(target.list()) == ["abs/a.jpg"]


# --- uploads and zips ---------------------------------------------------------------------


def test_save_uploads_stores_each_image_under_its_name(tmp_path):
    target = LocalStore(tmp_path)
    files = [("v1/a.jpg", io.BytesIO(b"aa")), ("b.PNG", io.BytesIO(b"bb"))]
    assert save_uploads(files, target, Settings()) == 2
    assert target.get("v1/a.jpg") == b"aa"
    assert target.get("b.PNG") == b"bb"


def test_save_uploads_refuses_a_non_image(tmp_path):
    target = LocalStore(tmp_path)
    with pytest.raises(BadRequest, match="not image file"):
        save_uploads([("notes.txt", io.BytesIO(b"x"))], target, Settings())
    assert list(target.list()) == []


def test_save_uploads_of_nothing_is_refused(tmp_path):
    with pytest.raises(SourceError):
        save_uploads([], LocalStore(tmp_path), Settings())


def make_zip(members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> io.BytesIO:
    """An in-memory zip with the given files (and folder entries)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for d in dirs:
            z.writestr(zipfile.ZipInfo(d), b"")
        for name, data in members.items():
            z.writestr(name, data)
    buf.seek(0)
    return buf


def test_zip_images_in_sub_folders_are_unpacked_and_other_members_skipped(tmp_path):
    target = LocalStore(tmp_path)
    archive = make_zip({"v1/a.jpg": b"A", "v2/sub/b.png": b"B" * 5000, "readme.txt": b"r",
                        "__MACOSX/v1/._a.jpg": b"m", "v1/.DS_Store": b"d"},
                       dirs=("v1/", "v2/", "v2/sub/"))
    assert save_zip(archive, target, Settings()) == 2
    assert list(target.list()) == ["v1/a.jpg", "v2/sub/b.png"]
    assert target.get("v2/sub/b.png") == b"B" * 5000


def test_a_single_zip_upload_is_unpacked(tmp_path):
    target = LocalStore(tmp_path)
    archive = make_zip({"v1/a.jpg": b"A", "v1/b.jpg": b"B"})
    assert save_uploads([("ADS.ZIP", archive)], target, Settings()) == 2
    assert list(target.list()) == ["v1/a.jpg", "v1/b.jpg"]


def test_zip_with_too_many_members_is_refused_before_writing(tmp_path):
    target = LocalStore(tmp_path)
    archive = make_zip({"a.jpg": b"a", "b.jpg": b"b", "c.jpg": b"c"})
    with pytest.raises(PayloadTooLarge, match="limit is 2"):
        save_zip(archive, target, Settings(max_zip_members=2))
    assert list(target.list()) == []


def test_zip_that_unpacks_too_large_is_refused_before_writing(tmp_path):
    target = LocalStore(tmp_path)
    archive = make_zip({"a.jpg": b"\0" * 1000})  # compresses to a few bytes
    with pytest.raises(PayloadTooLarge):
        save_zip(archive, target, Settings(max_zip_bytes=999))
    assert list(target.list()) == []


def test_non_zip_named_zip_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="not a valid zip"):
        save_uploads([("ads.zip", io.BytesIO(b"this is not a zip"))], LocalStore(tmp_path),
                     Settings())


def test_zip_member_escaping_the_target_is_refused(tmp_path):
    target = LocalStore(tmp_path / "target")
    with pytest.raises(BadRequest, match="unsafe"):
        save_zip(make_zip({"../evil.jpg": b"e"}), target, Settings())
    assert not (tmp_path / "evil.jpg").exists()
    assert list(target.list()) == []


def test_zip_without_images_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        save_zip(make_zip({"readme.txt": b"r"}), LocalStore(tmp_path), Settings())


def test_a_bad_name_late_in_an_upload_writes_nothing(tmp_path):
    target = LocalStore(tmp_path)
    files = [("ok.jpg", io.BytesIO(b"x")), ("../escape.jpg", io.BytesIO(b"y"))]
    with pytest.raises(BadRequest):
        save_uploads(files, target, Settings())
    assert list(target.list()) == []


# --- links swapped while a job runs, links into the store (hardening issue, items 1 and 2) --


def hook_after_check(monkeypatch, swap) -> None:
    """Run swap() once, right after the first roots check: the moment an attacker who
    repoints links in a loop would need to hit, made deterministic."""
    import facesense.inputs.paths as paths

    check, done = paths.inside_roots, []

    def checked_then_swapped(real, roots):
        ok = check(real, roots)
        if not done:
            done.append(swap())
        return ok

    monkeypatch.setattr(paths, "inside_roots", checked_then_swapped)


def local_source(folder, settings, store_root):
    return open_source(normalize_source(str(folder), settings), settings, LocalStore(store_root))


def test_a_link_repointed_outside_after_its_check_is_not_followed(root, outside, settings,
                                                                  tmp_path, monkeypatch):
    # Given a link inside the roots to an image inside them
    link = root / "ads" / "v1" / "b.jpg"
    link.symlink_to(root / "ads" / "v1" / "a.jpg")
    source = local_source(root / "ads", settings, tmp_path / "store")

    def repoint():
        link.unlink()
        link.symlink_to(outside / "secret.jpg")

    # When the link is repointed outside between the check and the open
    hook_after_check(monkeypatch, repoint)
    try:
        data = source.get("v1/b.jpg")
    except ObjectNotFound:
        data = None
    # Then the outside file is never read (the checked file is)
    assert data == b"a"


def test_a_folder_swapped_for_a_link_after_the_check_is_an_error(root, outside, settings,
                                                                tmp_path, monkeypatch):
    (outside / "v1").mkdir()
    (outside / "v1" / "a.jpg").write_bytes(b"outside")
    source = local_source(root / "ads", settings, tmp_path / "store")

    def swap_folder():
        (root / "ads" / "v1").rename(root / "ads" / "v1-old")
        (root / "ads" / "v1").symlink_to(outside / "v1", target_is_directory=True)

    hook_after_check(monkeypatch, swap_folder)
    with pytest.raises(ObjectNotFound, match="changed while being opened"):
        source.get("v1/a.jpg")


def test_a_fifo_named_like_an_image_is_refused_not_waited_on(root, settings, tmp_path):
    os.mkfifo(root / "ads" / "v1" / "pipe.jpg")
    source = local_source(root / "ads", settings, tmp_path / "store")
    with pytest.raises(ObjectNotFound):
        source.get("v1/pipe.jpg")


def test_a_link_into_the_store_is_not_an_input_even_inside_the_roots(tmp_path):
    # Given the store inside the allowed root (the default: ./var/store under the cwd), Alice's
    # upload in it, and Bob's folder holding a link to her image
    base = tmp_path / "cwd"
    store = LocalStore(base / "var" / "store")
    store.put("jobs/alice/inputs/secret/face.jpg", b"alice's face")
    bob = base / "bobdir" / "g"
    bob.mkdir(parents=True)
    (bob / "own.jpg").write_bytes(b"bob")
    (bob / "stolen.jpg").symlink_to(base / "var/store/jobs/alice/inputs/secret/face.jpg")
    settings = Settings(allowed_roots=(str(base),), store=str(base / "var" / "store"))
    # When Bob scores his folder
    source = local_source(base / "bobdir", settings, base / "var" / "store")
    # Then Alice's image is neither listed nor read, whatever the key
    assert list(source.list()) == ["g/own.jpg"]
    assert not source.exists("g/stolen.jpg")
    with pytest.raises(ObjectNotFound):
        source.get("g/stolen.jpg")
    with pytest.raises(ObjectNotFound):
        source.child("g").get("stolen.jpg")
    # And a link repointed into the store after listing is refused too
    (bob / "own.jpg").unlink()
    (bob / "own.jpg").symlink_to(base / "var/store/jobs/alice/inputs/secret/face.jpg")
    with pytest.raises(ObjectNotFound):
        source.get("g/own.jpg")
