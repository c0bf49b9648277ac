"""Faces through the API and real workers: a scoring job's rows per face and its summary, and a
version trained on faces that then crops them without being asked."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import requests
from PIL import Image

from bench.face_photos import astronaut, face_free, group_photo, group_set
from cli.launcher import start_workers, stop
from facesense.imaging import face_square
from facesense.outputs.thumbnails import FACE_MARGIN
from tests.browser import wait_for_js
from tests.conftest import wait_for_job, wait_for_workers
from tests.test_dashboard import finished_job

pytestmark = pytest.mark.slow

ROW_FIELDS = {"image", "group", "face", "box", "face_score", "label", "confidence", "probs",
              "error"}


@pytest.fixture(scope="module")
def photos(base_dir):
    """variant_a: the astronaut (1 face), a group of 5; variant_b: a group of 2, coffee (no
    face), a broken file."""
    root = base_dir / "faces-photos"
    for folder in ("variant_a", "variant_b"):
        (root / folder).mkdir(parents=True)
    astronaut().save(root / "variant_a" / "astronaut.jpg", quality=92)
    group_set(4)[3][1].save(root / "variant_a" / "group5.jpg", quality=92)
    group_set(1)[0][1].save(root / "variant_b" / "group2.jpg", quality=92)
    face_free()["coffee"].save(root / "variant_b" / "coffee.jpg", quality=92)
    (root / "variant_b" / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    return root


def test_a_scoring_job_with_faces_gives_a_row_per_face(client, worker, photos):
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(photos),
                                         "faces": True})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded" and record["faces"] is True, record
    assert record["progress"]["done"] == 5 and record["progress"]["failed"] == 1
    rows = client.get(f"/v1/jobs/{record['id']}/results?limit=100").get_json()["rows"]
    assert all(set(r) == ROW_FIELDS for r in rows)
    by_image = {}
    for r in rows:
        by_image.setdefault(r["image"].rsplit("/", 1)[-1], []).append(r)
    assert [r["face"] for r in by_image["group5.jpg"]] == [0, 1, 2, 3, 4]
    assert [r["face"] for r in by_image["group2.jpg"]] == [0, 1]
    assert [r["face"] for r in by_image["astronaut.jpg"]] == [0]
    for r in by_image["group5.jpg"] + by_image["group2.jpg"] + by_image["astronaut.jpg"]:
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 and 0 <= y0 < y1 and r["label"] in ("happy", "sad")
    [coffee] = by_image["coffee.jpg"]
    assert (coffee["face"], coffee["label"], coffee["error"]) == (None, None, None)
    [broken] = by_image["broken.jpg"]
    assert broken["face"] is None and broken["error"]

    summary = record["summary"]
    a, b = summary["groups"]["variant_a"], summary["groups"]["variant_b"]
    assert (a["images"], a["faces"], a["images_with_faces"], a["no_face"], a["failed"]) == (2, 6, 2, 0, 0)
    assert (b["images"], b["faces"], b["images_with_faces"], b["no_face"], b["failed"]) == (3, 2, 1, 1, 1)
    assert summary["overall"]["faces"] == summary["overall"]["scored"] == 8
    happy = sum(1 for r in rows if r["label"] == "happy")
    assert summary["overall"]["labels"]["happy"]["share"] == pytest.approx(happy / 8, abs=1e-6)

    paged, offset = [], 0  # pages of 3 rows reach every face row, past the 5 photos
    while offset is not None:
        got = client.get(f"/v1/jobs/{record['id']}/results?limit=3&offset={offset}").get_json()
        paged += got["rows"]
        offset = got["next_offset"]
    assert paged == rows and got["total"] == 10

    text = client.get(f"/v1/jobs/{record['id']}/results?format=csv").get_data(as_text=True)
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == len(rows) == 10
    assert {"face", "x0", "y0", "x1", "y1", "face_score"} <= set(table[0])
    assert sorted(int(t["face"]) for t in table if t["image"].endswith("group5.jpg")) == [0, 1, 2, 3, 4]


def test_without_faces_whole_images_are_scored_as_before(client, worker, photos):
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(photos)})
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded" and record["faces"] is False
    rows = client.get(f"/v1/jobs/{record['id']}/results?limit=100").get_json()["rows"]
    assert len(rows) == 5 and not any("face" in r for r in rows)
    assert "faces" not in record["summary"]["overall"]


def test_faces_must_be_a_boolean(client, photos):
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(photos), "faces": "yes"})
    assert resp.status_code == 400 and "faces" in resp.get_json()["error"]["message"]


@pytest.fixture(scope="module")
def labelled(base_dir):
    """happy/ and sad/: six one-face photos each (different real people), plus one face-free
    scene each that training with faces must skip."""
    root = base_dir / "faces-labelled"
    scenes = list(face_free().values())
    for c, label in enumerate(("happy", "sad")):
        (root / label).mkdir(parents=True)
        for i in range(6):
            photo, _ = group_photo(100 + 10 * c + i, 1, size=(480, 360), background="brick")
            photo.save(root / label / f"face{i}.jpg", quality=92)
        scenes[c].save(root / label / "scene.jpg", quality=92)
    return root


@pytest.fixture(scope="module")
def trainer(settings, worker):
    procs = start_workers(settings, 1, queues="training")
    wait_for_workers(settings, procs, count=2)
    yield procs[0]
    stop(procs)


def test_a_version_trained_on_faces_crops_them_when_scoring(client, trainer, labelled, photos):
    params = {"faces": True, "epochs": 1, "batch_size": 4, "image_size": 64, "patience": 0,
              "val_split": 0.5, "min_steps": 0}  # 3 + 3 faces held out: enough to beat chance
    resp = client.post("/v1/jobs", json={"type": "train", "dataset": str(labelled), "params": params})
    assert resp.status_code == 202, resp.get_json()
    trained = wait_for_job(client, resp.get_json()["id"])
    assert trained["status"] == "succeeded", trained
    assert trained["dataset_info"]["no_face"] == 2 and trained["dataset_info"]["skipped"] == 0
    manifest = client.get(f"/v1/models/{trained['model_version']}").get_json()
    assert manifest["faces"]["detector"] == "mtcnn" and manifest["faces"]["margin"] == 0.2
    assert manifest["dataset"]["no_face"] == 2
    counts = manifest["dataset"]["counts"]
    assert sum(n["train"] + n["val"] for n in counts.values()) == 12  # the 12 faces, no scene

    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(photos),
                                         "model": trained["model_version"]})
    scored = wait_for_job(client, resp.get_json()["id"])
    assert scored["status"] == "succeeded" and scored["faces"] is True
    assert scored["summary"]["overall"]["faces"] == 8
    off = client.post("/v1/jobs", json={"type": "classify", "source": str(photos),
                                        "model": trained["model_version"], "faces": False})
    assert wait_for_job(client, off.get_json()["id"])["faces"] is False


def test_the_gallery_shows_each_face_and_the_faceless_apart(page, server, settings,
                                                             base_dir):
    # Given a finished faces job on real photos: a group of three faces and a face-free scene
    root = base_dir / "faces-gallery"
    (root / "ad").mkdir(parents=True)
    _, group, boxes = group_set(2)[1]
    group.save(root / "ad" / "group.jpg", quality=92)
    face_free()["coffee"].save(root / "ad" / "coffee.jpg", quality=92)
    labels = ("happy", "sad", "happy")
    rows = [{"image": "ad/group.jpg", "group": "ad", "face": n, "box": list(box),
             "face_score": 0.99, "label": label, "confidence": 0.8,
             "probs": {label: 0.8, ({"happy", "sad"} - {label}).pop(): 0.2}, "error": None}
            for n, (box, label) in enumerate(zip(boxes, labels, strict=True))]
    rows.append({"image": "ad/coffee.jpg", "group": "ad", "face": None, "box": None,
                 "face_score": None, "label": None, "confidence": None, "probs": None,
                 "error": None})
    job_id = finished_job(settings, rows, source=root.as_uri(), faces=True)

    # When its page opens
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("#gallery figure img")
    wait_for_js(page, "[...document.querySelectorAll('#gallery img')].every(i => i.complete)")

    # Then the summary counts faces and the faceless image apart, shares over faces
    assert page.text_content("#faces-note").startswith("Each face found was scored")
    total = page.eval_on_selector("table.summary tr.total", "e => [...e.cells].map(c => c.textContent)")
    assert total[:4] == ["All", "2", "3", "1"]
    # and each face has its own card: its square crop, its number and label
    shown = page.eval_on_selector_all("#gallery figure", """els => els.map(e => [
        e.querySelector('figcaption').lastElementChild.textContent,
        e.querySelector('img').naturalWidth, e.querySelector('img').naturalHeight])""")
    assert [s[0] for s in shown] == ["face 1 · happy 80.0%", "face 2 · sad 80.0%",
                                     "face 3 · happy 80.0%", "no face"]
    assert all(w == h <= 128 for _, w, h in shown[:3]) and shown[3][1:] == [128, 85], shown
    # and a face's thumbnail is that face: close to its crop from the photo itself
    thumb = Image.open(io.BytesIO(requests.get(f"{server}/ui/api/jobs/{job_id}/thumbs/0",
                                               timeout=10).content)).convert("L")
    crop = group.crop(face_square(boxes[0], group.size, FACE_MARGIN)).convert("L")
    diff = np.abs(np.asarray(thumb, float) - np.asarray(crop.resize(thumb.size), float)).mean()
    assert diff < 12, diff
    # and "No face" shows the faceless image alone
    page.select_option("#filter-label", "!no_face")
    wait_for_js(page, "document.querySelectorAll('#gallery figure').length === 1")
    assert page.text_content("#gallery figure .no-face") == "no face"
