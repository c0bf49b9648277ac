"""Videos' loose ends: every row of a video job has t and frame (a photo's null), a retried
manifest job keeps each video's t0, and a video URL with a query string is still a video."""

from __future__ import annotations

import io
import json

import pytest

from bench.face_photos import astronaut
from facesense.inputs.video.limits import is_video
from facesense.outputs.results import write_results
from facesense.storage import LocalStore, layout
from tests import videogen as gen
from tests.conftest import wait_for_job
from tests.loopback import Loopback, respond

pytestmark = pytest.mark.slow


def rows_of(client, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs/{job_id}/results?limit=1000").get_json()["rows"]


def _row(image: str, **at) -> dict:
    return {"image": image, "group": "ad", **at, "label": "happy", "confidence": 0.9,
            "probs": {"happy": 0.9, "sad": 0.1}, "error": None}


def test_a_photo_row_has_null_t_and_frame_in_a_video_job_and_neither_in_a_photo_job(tmp_path):
    store = LocalStore(tmp_path)
    video, photo = _row("ad/v.mp4", t=0.2, frame=1), _row("ad/p.jpg")
    write_results(store, "j1", [video, photo], ["happy", "sad"], videos=True)
    with store.open(layout.job_key("j1", layout.RESULTS_JSONL)) as f:
        got = [json.loads(line) for line in f]
    assert [list(r) for r in got] == [list(video)] * 2  # same fields, same order
    assert got[1]["t"] is None and got[1]["frame"] is None and got[1]["label"] == "happy"
    write_results(store, "j2", [photo], ["happy", "sad"])  # a photo-only job: as it always was
    with store.open(layout.job_key("j2", layout.RESULTS_JSONL)) as f:
        assert [json.loads(line) for line in f] == [photo]


@pytest.mark.parametrize("name, video", [
    ("https://cdn.example/ads/v.mp4?sig=abc&exp=9", True),
    ("variant_a/http://127.0.0.1:81/v.WEBM#t=3", True),
    ("https://cdn.example/v.mov", True),
    ("https://cdn.example/watch?file=v.mp4", False),  # the query names a file, the path does not
    ("https://cdn.example/face.jpg?v=x.mp4", False),
    ("folder/clip.mkv", True),
])
def test_a_url_is_a_video_by_its_paths_extension(name, video):
    assert is_video(name) is video


def test_a_video_url_with_a_query_string_is_sampled_beside_a_photo_url(client, worker, base_dir):
    clip = gen.write_video(base_dir / "url-video" / "v.mp4", gen.steady(1.0)).read_bytes()
    photo = io.BytesIO()
    astronaut().save(photo, "JPEG", quality=90)
    with Loopback() as server:
        server.routes.update({"/v.mp4": respond(200, clip, {"Content-Type": "video/mp4"}),
                              "/face.jpg": respond(200, photo.getvalue())})
        urls = [server.url("/v.mp4?sig=abc&exp=9"), server.url("/face.jpg?sig=d")]
        resp = client.post("/v1/jobs", json={"type": "classify", "urls": urls, "video_fps": 5,
                                             "faces": False})
        assert resp.status_code == 202, resp.get_json()
        record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded" and record["videos"], record
    rows = rows_of(client, record["id"])
    frames = [r for r in rows if r["image"] == urls[0]]
    assert [r["frame"] for r in frames] == list(range(6))  # 1.0003 s at 5 a second: 0 .. 1.0
    assert [r["t"] for r in frames] == [round(k / 5, 3) for k in range(6)]
    assert all(r["error"] is None and r["label"] for r in frames)
    [still] = [r for r in rows if r["image"] == urls[1]]
    assert still["t"] is None and still["frame"] is None and still["label"]
    assert {tuple(r) for r in rows} == {tuple(frames[0])}  # every row: the same fields


def test_a_retried_manifest_job_keeps_each_videos_t0(client, worker, base_dir):
    root = base_dir / "video-retry"
    root.mkdir(parents=True)
    manifest = root / "viewers.csv"
    manifest.write_text("image,variant,t0\nlate.mp4,ad_a,0.6\nsoon.webm,ad_b,\n")
    gen.write_video(root / "soon.webm", gen.steady(1.0))
    (root / "late.mp4").write_text("not a video yet\n")  # fails now, is a video by the retry
    resp = client.post("/v1/jobs", json={"type": "classify", "manifest": str(manifest),
                                         "group_by": "variant", "video_fps": 5, "faces": False})
    assert resp.status_code == 202, resp.get_json()
    first = wait_for_job(client, resp.get_json()["id"])
    assert first["status"] == "succeeded" and first["progress"]["failed"] == 1, first
    assert [r["image"] for r in rows_of(client, first["id"]) if r["error"]] == ["late.mp4"]
    gen.write_video(root / "late.mp4", gen.steady(2.0))
    resp = client.post(f"/v1/jobs/{first['id']}/retry")
    assert resp.status_code == 202, resp.get_json()
    retry = wait_for_job(client, resp.get_json()["id"])
    assert retry["status"] == "succeeded", retry
    rows = rows_of(client, retry["id"])
    assert {r["image"] for r in rows} == {"late.mp4"} and all(r["error"] is None for r in rows)
    assert [r["t"] for r in rows] == [round(k / 5 - 0.6, 3) for k in range(len(rows))]
    assert rows[0]["t"] == -0.6 and rows[0]["group"] == "ad_a" and len(rows) == 11
