"""Hostile input: images, archives, local paths and model artifacts that must not hurt us."""

from __future__ import annotations

import contextlib
import functools
import io
import random
import stat
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from facesense.errors import BadRequest, ModelError, PayloadTooLarge, SourceError
from facesense.inputs.sources import normalize_source, open_source
from facesense.inputs.uploads import save_zip
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.storage import LocalStore, store_from_settings
from runtime.network import read_state_file
from runtime.preprocess import ImageRejected, decode, plain_jpeg, preprocess, spec_for
from tests import hostile_corpus as hc
from tests.conftest import wait_for_job

SPEC = spec_for(64)
CASES = functools.cache(hc.cases)  # made once: the bomb alone takes a few hundred ms

# --- images: the tricky conversions, no servers ------------------------------------------


def test_16_bit_png_is_scaled_to_8_bits_not_clipped():
    gray = decode(hc.png16_gray(np.array([[0, 257, 32768, 65535]], np.uint16)),
                  max_pixels=100)
    assert [gray.getpixel((x, 0))[0] for x in range(4)] == [0, 1, 128, 255]
    rgb = decode(hc.png16_rgb(np.array([[[65535, 32768, 0]]], np.uint16)), max_pixels=100)
    assert rgb.getpixel((0, 0)) == (255, 128, 0)


def test_exif_orientation_is_applied():
    # Stored 200x100, left red / right blue; orientation 6 means "rotate 90 degrees clockwise".
    img = decode(hc.exif_rotated_jpeg(6), max_pixels=10**6)
    assert img.size == (100, 200)  # portrait
    top, bottom = img.getpixel((50, 20)), img.getpixel((50, 180))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red on top, blue below
    crop = preprocess(hc.exif_rotated_jpeg(6), SPEC)
    assert crop[0, -1, 0] > 200 and crop[-1, 0, 2] > 200  # top row red, bottom row blue


def test_animated_gif_is_scored_on_its_first_frame():
    assert decode(hc.animated_gif(first=hc.RED, second=hc.BLUE), max_pixels=10**6) \
        .getpixel((10, 10)) == hc.RED
    assert decode(hc.animated_gif(first=hc.BLUE, second=hc.RED), max_pixels=10**6) \
        .getpixel((10, 10)) == hc.BLUE


@pytest.mark.parametrize("make", [hc.cmyk_adobe_jpeg, hc.cmyk_plain_jpeg])
def test_cmyk_jpegs_keep_their_colours_with_or_without_the_adobe_marker(make):
    data = make(rgb=(255, 0, 0))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert (b"Adobe" in data) == (make is hc.cmyk_adobe_jpeg)  # two different files
    r, g, b = decode(data, max_pixels=10**6).getpixel((10, 10))
    assert r > 240 and g < 15 and b < 15


def test_transparency_is_composited_on_white():
    clear = hc.encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG")
    assert decode(clear, max_pixels=100).getpixel((0, 0)) == (255, 255, 255)
    half = hc.encode(Image.new("LA", (8, 8), (0, 128)), "PNG")
    assert decode(half, max_pixels=100).getpixel((0, 0)) == (127, 127, 127)
    palette = decode(hc.palette_with_transparency(), max_pixels=10**6)
    assert palette.mode == "RGB" and (255, 255, 255) in {c for _, c in palette.getcolors()}


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.jpg", "text.jpg", "page.png",
                                  "postscript.jpg", "bomb.png", "huge_header.png",
                                  "hollow.png"])
def test_refused_images_get_a_short_specific_reason(name, monkeypatch):
    data, expected = CASES()[name]
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im) or load(im))
    with pytest.raises(ImageRejected, match=expected):
        preprocess(data, SPEC, max_pixels=100_000_000)
    if "too many pixels" in expected:  # bombs are refused from their header, never decoded
        assert decoded == []


def test_every_scored_case_decodes_to_a_model_input():
    for name, (data, expected) in CASES().items():
        if expected == hc.SCORED:
            assert preprocess(data, SPEC).shape == (64, 64, 3), name


def test_truncated_files_are_never_grey_padded():
    import trainer.data  # noqa: F401  every module that decodes images is loaded
    import worker.inference  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageRejected, match=r"^truncated image$"):
        decode(hc.truncated_jpeg(), max_pixels=10**6)


def test_gpu_decoder_path_leaves_cmyk_and_truncated_jpegs_to_the_cpu():
    from runtime.serving import LoadedModel
    from worker.inference import score

    plain = hc.encode(hc.halves((80, 60)), "JPEG")
    for data, gpu_ok in [(plain, True), (hc.cmyk_plain_jpeg(), False),
                         (hc.cmyk_adobe_jpeg(), False), (hc.truncated_jpeg(), False)]:
        assert plain_jpeg(Image.open(io.BytesIO(data)), data) is gpu_ok
    # The 'gpu' path runs torchvision's decoder on whatever device the model is on: CPU here.
    from runtime.network import build_alexnet

    torch.manual_seed(0)
    loaded = LoadedModel("v", ["a", "b"], SPEC, build_alexnet(2).eval(), torch.device("cpu"),
                         "fp32")
    files = {"ok.jpg": plain, "cmyk.jpg": hc.cmyk_plain_jpeg(), "cut.jpg": hc.truncated_jpeg()}
    rows = {decoder: {r["image"]: r for r in score(
        files, loaded, lambda k, _: files[k], batch_size=8, threads=2, max_pixels=10**6,
        max_bytes=10**6, decoder=decoder)} for decoder in ("cpu", "gpu")}
    assert rows["gpu"]["cut.jpg"]["error"] == "truncated image"
    assert rows["gpu"]["cmyk.jpg"]["probs"] == rows["cpu"]["cmyk.jpg"]["probs"]
    assert rows["gpu"]["ok.jpg"]["label"] in ("a", "b")


# --- the corpus, as one job through the API and the real worker -----------------------


def peak_rss_mb(pid: int) -> int:
    """A process's peak resident memory (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) // 1024


def zip_of(members: dict[str, bytes]) -> io.BytesIO:
    """An in-memory deflated zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    buf.seek(0)
    return buf


def bucket_keys(s3, settings) -> set[str]:
    """Every key in the test bucket."""
    bucket = settings.store.removeprefix("s3://").split("/")[0]
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


@pytest.mark.slow
def test_hostile_corpus_job_scores_or_explains_every_image(client, worker, settings, s3):
    # Given a warm worker (model loaded) and its peak memory so far
    warm = client.post("/v1/jobs", data={"type": "classify", "files": [
        (io.BytesIO(hc.encode(hc.halves((64, 64)), "JPEG")), "warm.jpg")]})
    assert wait_for_job(client, warm.get_json()["id"])["status"] == "succeeded"
    peak_before = peak_rss_mb(worker.pid)
    cases = CASES(settings.max_image_pixels)
    extras = {"notes.txt": b"not an image", "__MACOSX/hostile/._bomb.png": b"\0",
              "hostile/.DS_Store": b"\0"}
    before = bucket_keys(s3, settings)

    # When the whole corpus goes in as one zipped upload
    archive = zip_of({**{f"hostile/{n}": d for n, (d, _) in cases.items()}, **extras})
    resp = client.post("/v1/jobs", data={"type": "classify", "files": (archive, "hostile.zip")})
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    record = wait_for_job(client, job["id"], timeout=120)

    # Then the job succeeds with one row per image, each with its exact outcome
    assert record["status"] == "succeeded", record
    assert record["progress"]["total"] == len(cases)
    rows = client.get(f"/v1/jobs/{job['id']}/results?limit=1000").get_json()["rows"]
    assert len(rows) == len(cases)
    by_name = {r["image"].removeprefix("hostile/"): r for r in rows}
    assert set(by_name) == set(cases)
    wrong = {n: (r["label"], r["error"], cases[n][1]) for n, r in by_name.items()
             if not hc.outcome_matches(r, cases[n][1])}
    assert not wrong
    failed = sum(expected != hc.SCORED for _, expected in cases.values())
    assert record["progress"]["failed"] == failed
    # the non-image members were skipped and reported, not stored or scored
    assert record["skipped_count"] == 3
    assert {s["name"]: s["reason"] for s in record["skipped"]} == {
        "notes.txt": "not an image", "__MACOSX/hostile/._bomb.png": "hidden or system file",
        "hostile/.DS_Store": "hidden or system file"}
    # everything written lies under the job's own prefix
    new = bucket_keys(s3, settings) - before
    prefix = settings.store.removeprefix("s3://").split("/", 1)[1] + f"/jobs/{job['id']}/"
    assert new and all(k.startswith(prefix) for k in new), sorted(new)[:5]
    inputs = {k.removeprefix(prefix + "inputs/") for k in new if "/inputs/" in k}
    assert inputs == {f"hostile/{n}" for n in cases}
    # and the worker lived through it without decoding the bombs
    assert worker.poll() is None
    growth = peak_rss_mb(worker.pid) - peak_before
    assert growth < 256, f"worker peak memory grew {growth} MiB (from {peak_before} MiB)"


# --- archives -------------------------------------------------------------------------


def symlink_member(name: str, target: str) -> zipfile.ZipInfo:
    """A zip entry that unpacks (with unzip) as a symlink to target."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so external_attr carries the file mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def hostile_zip(kind: str) -> io.BytesIO:
    """One .zip per archive attack, each next to an innocent image."""
    ok = hc.encode(hc.halves((32, 32)), "JPEG")
    if kind == "only_text":
        return zip_of({"evil.txt": b"x", "notes/readme.md": b"y"})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.jpg", ok)
        if kind == "dotdot":
            zf.writestr("v1/../../evil.jpg", ok)
        elif kind == "absolute":
            zf.writestr("/tmp/evil.jpg", ok)
        elif kind == "symlink":
            zf.writestr(symlink_member("evil.jpg", "/etc/passwd"), "/etc/passwd")
        elif kind == "bomb":
            zf.writestr("evil.bmp", b"\0" * (8 << 20))  # 8 MiB that deflate to ~8 KB
        elif kind == "duplicate":
            zf.writestr("evil.jpg", ok)
            zf.writestr("./evil.jpg", ok)
        elif kind == "encrypted":
            zf.writestr("evil.jpg", ok)
    data = buf.getvalue()
    if kind == "encrypted":  # zipfile can't write encrypted members: set the flag by hand
        data = set_central_flag(data, b"evil.jpg", 0x1)
    return io.BytesIO(data)


def set_central_flag(data: bytes, name: bytes, flag: int) -> bytes:
    """A zip with a flag bit set on one member's central-directory entry."""
    out = bytearray(data)
    at = out.index(b"PK\x01\x02")
    while at >= 0:
        name_len = int.from_bytes(out[at + 28:at + 30], "little")
        if out[at + 46:at + 46 + name_len] == name:
            flags = int.from_bytes(out[at + 8:at + 10], "little") | flag
            out[at + 8:at + 10] = flags.to_bytes(2, "little")
            return bytes(out)
        at = out.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{name!r} not in the zip")


@pytest.mark.parametrize("kind, status, message", [
    ("dotdot", 400, "unsafe .zip member 'v1/../../evil.jpg': '..' climbs out of the upload"),
    ("absolute", 400, "unsafe .zip member '/tmp/evil.jpg': an absolute path"),
    ("symlink", 400, "unsafe .zip member 'evil.jpg': a symbolic link"),
    ("bomb", 413, "'evil.bmp' expands"),
    ("duplicate", 400, "'./evil.jpg' appears more than once"),
    ("encrypted", 422, "'evil.jpg' is encrypted"),
    ("only_text", 422, "holds no images"),
])
def test_hostile_zip_uploads_are_refused_and_write_nothing(client, settings, s3, kind, status,
                                                           message):
    before = bucket_keys(s3, settings)
    resp = client.post("/v1/jobs", data={"type": "classify",
                                         "files": (hostile_zip(kind), "upload.zip")})
    assert resp.status_code == status, resp.get_json()
    assert message in resp.get_json()["error"]["message"]
    new = bucket_keys(s3, settings) - before
    assert not [k for k in new if "/inputs/" in k or "evil" in k]


@pytest.mark.parametrize("field, value, message", [
    ("max_zip_members", 2, "the .zip has 3 members; the limit is 2"),
    ("max_zip_bytes", 100, "unpacks to more than 100 bytes"),
])
def test_zip_caps_are_settings_and_answer_413(settings, model_version, field, value, message):
    from api import create_app

    small = create_app(settings.replace(**{field: value})).test_client()
    archive = zip_of({f"{i}.jpg": hc.encode(hc.halves((32, 32)), "JPEG") for i in range(3)})
    resp = small.post("/v1/jobs", data={"type": "classify", "files": (archive, "a.zip")})
    assert resp.status_code == 413 and message in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "bomb", "duplicate"])
def test_refused_archives_touch_no_file_on_a_local_store(tmp_path, kind):
    target = LocalStore(tmp_path / "store" / "jobs" / "j1" / "inputs")
    with pytest.raises((BadRequest, PayloadTooLarge)):
        save_zip(hostile_zip(kind), target, Settings())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_write_failure_removes_what_the_archive_had_written(tmp_path):
    # 'a.jpg' is written, then 'v2/b.jpg' can't be (a file is in the way): no debris left
    target = LocalStore(tmp_path / "inputs")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "v2").write_bytes(b"in the way")
    archive = zip_of({"a.jpg": b"a", "v2/b.jpg": b"b"})
    with pytest.raises(SourceError, match="can't be unpacked"):
        save_zip(archive, target, Settings())
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["v2"]


def test_member_count_is_checked_before_parsing_and_again_after(tmp_path):
    archive = zip_of({f"{i}.jpg": b"x" for i in range(50)}).getvalue()
    with pytest.raises(PayloadTooLarge, match=r"the \.zip has 50 members"):  # end record
        save_zip(io.BytesIO(archive), LocalStore(tmp_path), Settings(max_zip_members=10))
    # An end record that lies (1 member) still can't get 50 members through
    eocd = archive.rindex(b"PK\x05\x06")
    lying = bytearray(archive)
    lying[eocd + 8:eocd + 12] = (1).to_bytes(2, "little") * 2
    with pytest.raises(PayloadTooLarge, match=r"the \.zip has 50 members"):
        save_zip(io.BytesIO(bytes(lying)), LocalStore(tmp_path), Settings(max_zip_members=10))
    assert list(LocalStore(tmp_path).list()) == []


# --- local paths ----------------------------------------------------------------------


@pytest.fixture
def roots(base_dir, unique):
    """A folder inside the allowed root, with one image, a link out and a link in."""
    inside = base_dir / f"paths-{unique}"
    (inside / "v1").mkdir(parents=True)
    (inside / "v1" / "face.jpg").write_bytes(hc.encode(hc.halves((32, 32)), "JPEG"))
    (inside / "etc-link").symlink_to("/etc", target_is_directory=True)
    return inside


@pytest.mark.parametrize("source", [
    "/etc", "file:///etc", "{inside}/../..", "{inside}/v1/../../../etc", "{inside}/etc-link",
    "file://{inside}/etc-link", "{inside}/v1/\0/x",
])
def test_local_sources_outside_the_roots_are_4xx(client, roots, source):
    source = source.format(inside=roots)
    for body in ({"type": "classify", "source": source}, {"type": "train", "dataset": source}):
        resp = client.post("/v1/jobs", json=body)
        assert 400 <= resp.status_code < 500, resp.get_json()
        assert resp.get_json()["error"]["code"] == "unusable_source"


def test_file_links_out_of_the_roots_are_not_inputs(roots, tmp_path):
    outside = tmp_path / "private.jpg"
    outside.write_bytes(b"someone else's face")
    (roots / "v1" / "leak.jpg").symlink_to(outside)
    (roots / "v1" / "alias.jpg").symlink_to(roots / "v1" / "face.jpg")
    settings = Settings(allowed_roots=(str(roots),))
    source = open_source(normalize_source(str(roots), settings), settings, LocalStore(tmp_path))
    assert list(source.list()) == ["v1/alias.jpg", "v1/face.jpg"]
    assert source.get("v1/alias.jpg") == (roots / "v1" / "face.jpg").read_bytes()
    with pytest.raises(Exception, match="inside the allowed roots"):
        source.get("v1/leak.jpg")
    assert list(source.child("v1").list()) == ["alias.jpg", "face.jpg"]


def test_folder_names_needing_url_escapes_round_trip(base_dir, unique):
    folder = base_dir / f"ads {unique} été"
    (folder / "v1").mkdir(parents=True)
    (folder / "v1" / "a.jpg").write_bytes(b"a")
    settings = Settings(allowed_roots=(str(base_dir),))
    url = normalize_source(str(folder), settings)
    assert "%20" in url
    main = LocalStore(base_dir / f"store-{unique}")  # beside the folder: a store never holds it
    assert list(open_source(url, settings, main).list()) == ["v1/a.jpg"]


# --- model artifacts ------------------------------------------------------------------


class Payload:
    """Pickles as 'open(marker, "w")': unpickling it runs code that creates the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path, marker) -> None:
    """A real AlexNet-shaped state dict file that also carries pickled code."""
    torch.save({"state_dict": {"features.0.weight": torch.zeros(2)}, "x": Payload(marker)}, path)


def test_the_payload_really_runs_code_when_loaded_unsafely(tmp_path):
    evil_checkpoint(tmp_path / "probe.pt", tmp_path / "probe-ran")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert (tmp_path / "probe-ran").exists()  # so the refusals below refuse something real


def test_weights_with_pickled_code_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(ModelError, match=r"refused.*pickled code: .*open"):
        read_state_file(tmp_path / "evil.pt")
    (tmp_path / "evil.safetensors").write_bytes((tmp_path / "evil.pt").read_bytes())
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        read_state_file(tmp_path / "evil.safetensors")
    assert not marker.exists()


def test_a_training_checkpoint_with_pickled_code_is_refused(tmp_path):
    from trainer.train import Checkpoints

    marker = tmp_path / "pwned"
    evil_checkpoint(tmp_path / "evil.pt", marker)
    store = LocalStore(tmp_path / "store")
    store.put("jobs/j1/checkpoint.pt", (tmp_path / "evil.pt").read_bytes())
    with pytest.raises(ModelError, match="not a plain tensor checkpoint"):
        Checkpoints(store, "jobs/j1/checkpoint.pt").load()
    assert not marker.exists()


def test_weights_not_matching_the_manifest_checksum_are_refused(tmp_path):
    from worker.model_cache import ModelCache

    registry = Registry(LocalStore(tmp_path))
    manifest = registry.register(b"weights" * 10, {"classes": ["a", "b"]}, version="v1")
    LocalStore(tmp_path).put("models/v1/weights.safetensors", b"tampered" * 10)
    cache = ModelCache(registry, torch.device("cpu"), "fp32")
    with pytest.raises(ModelError, match="v1: weights checksum mismatch"):
        cache.get(manifest["version"])


@pytest.mark.slow
def test_a_job_on_a_tampered_model_fails_with_the_reason(client, worker, settings, roots,
                                                         unique):
    registry = Registry(store_from_settings(settings))
    version = registry.register(b"w" * 64, {"classes": ["a", "b"]}, version=f"tamper-{unique}")
    registry.store.put(f"models/{version['version']}/weights.safetensors", b"x" * 64)
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(roots),
                                         "model": version["version"]})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"], timeout=60)
    assert record["status"] == "failed"
    assert "weights checksum mismatch" in record["error"]
    assert worker.poll() is None


def test_random_bytes_never_crash_the_decoder():
    rng = random.Random(0)
    for n in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        data = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b""][n % 5] + data
        with contextlib.suppress(ImageRejected):  # anything else fails the test
            preprocess(data, SPEC, max_pixels=10**6)


def test_the_pixel_limit_is_a_parameter():
    with pytest.raises(ImageRejected, match=r"^too many pixels: 6000 > 5999$"):
        preprocess(hc.encode(hc.halves((100, 60)), "PNG"), SPEC, max_pixels=5999)
    assert preprocess(hc.encode(hc.halves((100, 60)), "PNG"), SPEC, max_pixels=6000).any()
