"""Faces on real photos: the detector's recall and false finds, its offline weights, the engine's
rows per face, and the box arithmetic."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from bench.face_photos import astronaut, face_free, group_set, matched
from facesense.errors import FacesenseError
from facesense.imaging import face_square
from runtime.faces import Face, FaceDetector, FaceOptions, _faces, cut_faces
from runtime.network import build_alexnet
from runtime.preprocess import spec_for
from runtime.serving import LoadedModel
from worker.inference import score


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("cpu")


def test_recall_and_false_finds_on_real_photos(detector):
    """>= 0.9 of 20 real faces found (astronaut + six group photos), <= 1 find on 10 scenes."""
    options = FaceOptions()
    truth = [("astronaut", astronaut(), [(170, 40, 280, 180)]), *group_set()]
    found = detector.detect([img for _, img, _ in truth], options)
    hits = sum(matched(boxes, [f.box for f in faces])
               for (_, _, boxes), faces in zip(truth, found, strict=True))
    total = sum(len(boxes) for _, _, boxes in truth)
    assert total == 20 and hits / total >= 0.9, (hits, total)
    assert all(len(faces) <= len(boxes) for (_, _, boxes), faces in zip(truth, found, strict=True))
    scenes = face_free()
    false_finds = sum(map(len, detector.detect(list(scenes.values()), options)))
    assert len(scenes) == 10 and false_finds <= 1


def test_boxes_are_in_the_photos_pixels_largest_first(detector):
    """A photo detected on a 4x smaller copy still gives boxes in its own pixels."""
    _name, img, boxes = group_set(1, size=(2560, 1707))[0]
    faces = detector.detect([img], FaceOptions())[0]
    assert matched(boxes, [f.box for f in faces]) == len(boxes) == 2
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    capped = detector.detect([img], FaceOptions(max_faces=1))[0]
    assert capped == faces[:1]
    assert detector.detect([img], FaceOptions(min_size=10_000))[0] == []


def test_the_weights_load_from_the_package_with_sockets_blocked():
    """A fresh process that can't open a socket still loads MTCNN and finds the astronaut."""
    code = textwrap.dedent("""
        import socket
        def refuse(*a, **k):
            raise OSError("network blocked by the test")
        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = socket.getaddrinfo = refuse
        from bench.face_photos import astronaut
        from runtime.faces import FaceDetector, FaceOptions
        print(len(FaceDetector("cpu").detect([astronaut()], FaceOptions())[0]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"


def test_face_square_grows_by_the_margin_and_stays_in_the_photo():
    assert face_square((100, 100, 200, 180), (1000, 800), 0.2) == (80, 70, 220, 210)
    assert face_square((0, 0, 100, 100), (1000, 800), 0.5) == (0, 0, 200, 200)
    assert face_square((900, 700, 1000, 800), (1000, 800), 0.5) == (800, 600, 1000, 800)
    assert face_square((0, 0, 300, 300), (320, 240), 0.5) == (30, 0, 270, 240)


def test_face_filter_maps_back_and_drops_weak_or_small():
    rows = torch.tensor([[10, 10, 50, 50, 0.99], [0, 0, 8, 8, 0.99], [60, 60, 90, 90, 0.5]]).numpy()
    faces = _faces(rows, (100, 100), (200, 200), FaceOptions(min_size=32, threshold=0.7))
    assert faces == [Face((20, 20, 100, 100), 0.99)]


@pytest.fixture(scope="module")
def loaded():
    torch.manual_seed(0)
    return LoadedModel("v", ["happy", "sad"], spec_for(112), build_alexnet(2).eval(),
                       torch.device("cpu"), "fp32")


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_the_engine_gives_a_row_per_face_and_one_for_a_photo_without(detector, loaded):
    _, group, boxes = group_set(4)[3]  # five faces
    images = {"a/astronaut.jpg": jpeg(astronaut()), "a/group.jpg": jpeg(group),
              "b/coffee.jpg": jpeg(face_free()["coffee"]), "b/broken.jpg": b"\xff\xd8 cut"}
    options = FaceOptions()

    def cut(photos, spec):
        return cut_faces(photos, spec, detector=detector, options=options)

    rows = list(score(list(images), loaded, lambda key, limit: images[key], batch_size=8,
                      threads=2, max_pixels=10**8, max_bytes=10**7, faces=cut))
    by_image = {k: [r for r in rows if r["image"] == k] for k in images}
    assert [r["face"] for r in by_image["a/group.jpg"]] == [0, 1, 2, 3, 4]
    assert matched(boxes, [r["box"] for r in by_image["a/group.jpg"]]) == 5
    assert [r["face"] for r in by_image["a/astronaut.jpg"]] == [0]
    for r in by_image["a/group.jpg"] + by_image["a/astronaut.jpg"]:
        assert set(r) == {"image", "group", "face", "box", "face_score", "label", "confidence",
                          "probs", "error"}
        assert r["error"] is None and r["label"] in ("happy", "sad") and r["face_score"] >= 0.7
        assert r["confidence"] == max(r["probs"].values())
    [coffee] = by_image["b/coffee.jpg"]
    assert coffee["face"] is None and coffee["label"] is None and coffee["error"] is None
    [broken] = by_image["b/broken.jpg"]
    assert broken["face"] is None and broken["error"]
    # each face's probabilities are the model's on its own crop, as scoring one crop alone gives
    alone = list(score(["a/astronaut.jpg"], loaded, lambda key, limit: images[key], batch_size=1,
                       threads=1, max_pixels=10**8, max_bytes=10**7, faces=cut))
    assert alone[0]["probs"] == pytest.approx(by_image["a/astronaut.jpg"][0]["probs"], abs=1e-4)


def test_a_manifest_joins_every_face_of_a_photo_in_one_pass(tmp_path):
    """Rows per face join their photo's manifest line without re-reading the manifest."""
    from facesense.inputs.manifest_source import with_meta
    from facesense.inputs.manifests import save_manifest
    from facesense.settings import Settings
    from facesense.storage import LocalStore

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        astronaut().save(photos / name)
    settings = Settings(allowed_roots=(str(tmp_path),), data_dir=str(tmp_path / "var"))
    store = LocalStore(tmp_path / "store")
    csv_text = "image,variant\n1.jpg,x\n2.jpg,y\n3.jpg,z\n"
    save_manifest(csv_text.encode(), "m.csv", photos.as_uri(), "variant", store, "job1", settings)
    opened = []
    real_open = store.open
    store.open = lambda key: opened.append(key) or real_open(key)
    rows = [{"image": image, "group": "", "face": face}
            for image, faces in (("1.jpg", 3), ("2.jpg", 0), ("3.jpg", 2))
            for face in (range(faces) or [None])]
    joined, columns = with_meta(store, "job1", rows)
    groups = [r["group"] for r in joined]
    assert groups == ["x", "x", "x", "y", "z", "z"] and columns == ["variant"]
    assert len(opened) == 2  # the header, then one pass over the lines


def test_a_big_rotated_photo_gives_boxes_in_its_own_upright_pixels(detector, loaded):
    """A 3000x2000 photo stored on its side with EXIF orientation 6 is held at 2048 px for its
    faces; its boxes still land on the faces in the upright photo's own pixels."""
    _, small, small_boxes = group_set(3)[2]  # four faces at 960x640, blown up 3.125 times
    upright = small.resize((3000, 2000), Image.BICUBIC)
    boxes = [tuple(round(v * 3.125) for v in box) for box in small_boxes]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif)

    def cut(photos, spec):
        assert max(photos[0].size) == 2048  # held, not the full photo
        return cut_faces(photos, spec, detector=detector, options=FaceOptions())

    rows = list(score(["a.jpg"], loaded, lambda key, limit: buf.getvalue(), batch_size=4,
                      threads=1, max_pixels=10**8, max_bytes=10**8, faces=cut))
    assert len(rows) == len(boxes) == 4
    assert matched(boxes, [r["box"] for r in rows]) == 4


def test_a_version_trained_on_faces_fixes_how_they_are_found():
    mine = FaceOptions(margin=0.3, min_size=40, threshold=0.9, max_faces=5, detect_side=800)
    recorded = {"faces": {"detector": "mtcnn", "margin": 0.1, "min_size": 24, "threshold": 0.8,
                          "detect_side": 512}}
    assert mine.for_version(recorded) == FaceOptions(0.1, 24, 0.8, 5, 512)
    assert mine.for_version({"faces": None}) == mine
    with pytest.raises(FacesenseError, match="haar"):
        mine.for_version({"version": "v1", "faces": {"detector": "haar"}})
    with pytest.raises(FacesenseError, match="out of range"):
        FaceOptions(detect_side=0)


def test_promotion_prepares_the_incumbent_as_it_is_served(detector):
    """A version trained on faces is shown its largest face; another, the whole photo."""
    from runtime.faces import LargestFace
    from runtime.preprocess import fit, preprocess
    from trainer.promotion import inputs_for

    data = jpeg(astronaut())
    spec = spec_for(64)
    whole = inputs_for({"preprocess": spec}, torch.device("cpu"))(data)
    assert np.array_equal(whole, preprocess(data, spec))
    entry = LargestFace(detector, FaceOptions()).entry
    face = inputs_for({"preprocess": spec, "faces": entry}, torch.device("cpu"))(data)
    crop = LargestFace(detector, FaceOptions())(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(face, fit(crop, spec)) and not np.array_equal(face, whole)
