"""Faces on real photos: the detector's recall and false finds, its offline weights, the engine's
rows per face, and the box arithmetic."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image

from bench.face_photos import astronaut, face_free, group_set, matched
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
    faces = _faces(rows, 0.5, (200, 200), FaceOptions(min_size=32, threshold=0.7))
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
