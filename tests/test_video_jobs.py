"""Reaction videos through the API and real workers: rows per sampled frame (and per face), t and
frame, hostile videos as error rows beside intact photos, t0 from a manifest, and a worker
SIGKILLed mid-video losing no frame and duplicating none."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest

from bench.face_photos import astronaut
from facesense.inputs.video.frames import sample
from facesense.inputs.video.limits import VideoLimits
from facesense.inputs.video.probe import probe
from runtime.faces import FaceDetector, FaceOptions, face_copy
from tests import videogen as gen
from tests.conftest import wait_for_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def videos(base_dir):
    """variant_a: a 4 s H.264 MP4 with sound, a 3 s VP9 WebM, a photo; variant_b: the hostile."""
    root = base_dir / "video-jobs"
    a, b = root / "variant_a", root / "variant_b"
    gen.write_video(a / "steady.mp4", gen.steady(4.0), audio=True)
    gen.write_video(a / "phone.webm", gen.variable(3.0, seed=1))
    b.mkdir(parents=True)
    astronaut().save(a / "astronaut.jpg", quality=90)
    whole = gen.write_video(root / "whole.webm", gen.steady(6.0))
    gen.truncated(b / "cut.webm", whole)
    (b / "empty.mp4").write_bytes(b"")
    (b / "notes.mp4").write_text("not a video\n")
    gen.tiny(b / "tiny.avi")
    gen.huge_frame(b / "huge.avi")
    gen.write_video(b / "long.mp4", [0.0, 4000.0])
    gen.audio_only(b / "sound.mp4")
    return root


def rows_of(client, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs/{job_id}/results?limit=1000").get_json()["rows"]


HOSTILE = {"empty.mp4": "the file is empty", "notes.mp4": "not a readable video",
           "tiny.avi": "smaller than 16 px", "huge.avi": "16000x16000 are larger than 4096 px",
           "long.mp4": "longer than 3600 s", "sound.mp4": "no video track (audio only)"}


def test_a_job_scores_each_sampled_frame_and_hostile_videos_become_error_rows(client, worker, videos):
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(videos),
                                         "video_fps": 5, "faces": False})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded" and record["video_fps"] == 5 and record["videos"], record
    rows = rows_of(client, record["id"])
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r["image"].rsplit("/", 1)[-1], []).append(r)

    steady = by_file["steady.mp4"]  # 4.0003 s declared: samples at 0, 0.2 .. 4.0
    assert [r["frame"] for r in steady] == list(range(21))
    assert [r["t"] for r in steady] == [round(k / 5, 3) for k in range(21)]
    assert all(r["group"] == "variant_a" and r["label"] in ("happy", "sad") and r["error"] is None
               and set(r["probs"]) == {"happy", "sad"} for r in steady)
    phone = probe(videos / "variant_a" / "phone.webm", VideoLimits())  # VFR: still 5 a second
    assert [r["frame"] for r in by_file["phone.webm"]] == list(range(phone.samples(5)))
    [photo] = by_file["astronaut.jpg"]
    assert photo.get("t") is None and photo.get("frame") is None and photo["label"]

    cut = by_file["cut.webm"]  # 6 s declared, its bytes cut at 45%
    *frames, broke = cut
    assert frames and [r["frame"] for r in frames] == list(range(len(frames)))
    assert broke["error"].startswith("the video ends at") and broke["frame"] is None
    assert frames[-1]["t"] < broke["t"] < 6.0
    for name, says in HOSTILE.items():
        [row] = by_file[name]
        assert says in row["error"] and row["label"] is None and row["t"] is None, row
    assert record["progress"]["failed"] == len(HOSTILE) + 1
    assert worker.poll() is None  # no input took the worker down

    table = list(csv.DictReader(io.StringIO(client.get(
        f"/v1/jobs/{record['id']}/results?format=csv").get_data(as_text=True))))
    assert list(table[0])[:4] == ["image", "group", "t", "frame"]
    assert [(t["t"], t["frame"]) for t in table if t["image"].endswith("steady.mp4")][:3] == [
        ("0.0", "0"), ("0.2", "1"), ("0.4", "2")]
    assert [(t["t"], t["frame"]) for t in table if t["image"].endswith(".jpg")] == [("", "")]


def test_with_faces_a_video_gives_a_row_per_face_per_frame(client, worker, base_dir):
    root = base_dir / "video-faces"
    # The face moves 15 px between samples, a third of its side; a video that is not one beside.
    gen.write_video(root / "viewer" / "face.mp4", gen.steady(1.0), size=(320, 240), move=2)
    (root / "viewer" / "notes.mp4").write_text("not a video")
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(root),
                                         "video_fps": 4, "faces": True})
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded", record
    rows = rows_of(client, record["id"])
    errors = [r["error"] for r in rows if r["image"].endswith("notes.mp4")]
    assert len(errors) == 1 and errors[0].startswith("not a readable video")
    rows = [r for r in rows if r["image"].endswith("face.mp4")]
    assert sorted({r["frame"] for r in rows}) == [0, 1, 2, 3, 4]  # 1.0003 s at 4 a second
    with_face = [r for r in rows if r["face"] is not None]
    assert len(with_face) >= 4  # the astronaut's face, frame after frame
    for r in with_face:
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240 and r["label"] in ("happy", "sad")
        assert r["t"] == round(r["frame"] / 4, 3)
    # Frames 1-3 were followed from frame 0 (a full detection a second): the faces a full
    # detection of each frame finds, where it finds them.
    path = root / "viewer" / "face.mp4"
    detected = FaceDetector("cpu").detect(
        [face_copy(s.image)[0] for s in sample(path, probe(path, VideoLimits()), 4)], FaceOptions())
    assert detected[4][0].box[0] - detected[0][0].box[0] >= 40  # the face did move
    for k, faces in enumerate(detected):
        got = [r["box"] for r in with_face if r["frame"] == k]
        assert len(got) == len(faces) and all(
            gen.iou(box, face.box) >= 0.7 for box, face in zip(got, faces, strict=True))


def test_a_manifest_t0_shifts_each_viewers_time_to_the_ads_start(client, worker, base_dir):
    root = base_dir / "video-t0"
    gen.write_video(root / "v1.mp4", gen.steady(2.0))
    gen.write_video(root / "v2.webm", gen.steady(2.0))
    manifest = root / "viewers.csv"
    manifest.write_text("image,variant,t0\nv1.mp4,ad_a,1.2\nv2.webm,ad_b,\n")
    resp = client.post("/v1/jobs", json={"type": "classify", "manifest": str(manifest),
                                         "group_by": "variant", "video_fps": 5, "faces": False})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded", record
    rows = rows_of(client, record["id"])
    v1 = [r for r in rows if r["image"] == "v1.mp4"]
    v2 = [r for r in rows if r["image"] == "v2.webm"]
    assert [r["t"] for r in v1] == [round(k / 5 - 1.2, 3) for k in range(len(v1))]
    assert v1[0]["t"] == -1.2 and v1[0]["frame"] == 0 and v1[0]["group"] == "ad_a"
    assert [r["t"] for r in v2] == [round(k / 5, 3) for k in range(len(v2))]  # empty t0: 0


def test_uploaded_videos_are_stored_then_sampled_as_sent_files_and_in_a_zip(client, worker, tmp_path):
    clip = gen.write_video(tmp_path / "clip.webm", gen.steady(1.0)).read_bytes()
    resp = client.post("/v1/jobs", data={"type": "classify", "video_fps": "5", "files": [
        (io.BytesIO(clip), "ad_a/viewer1.webm"), (io.BytesIO(clip), "ad_b/viewer2.webm")]})
    assert resp.status_code == 202, resp.get_json()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ad_a/viewer3.webm", clip)
        zf.writestr("notes.txt", "not a video")
    archive.seek(0)
    zipped = client.post("/v1/jobs", data={"type": "classify", "video_fps": "2",
                                           "files": (archive, "batch.zip")})
    assert zipped.status_code == 202, zipped.get_json()
    for job, fps, names in ((resp, 5, {"ad_a/viewer1.webm", "ad_b/viewer2.webm"}),
                            (zipped, 2, {"ad_a/viewer3.webm"})):
        record = wait_for_job(client, job.get_json()["id"])
        assert record["status"] == "succeeded" and record["video_fps"] == fps, record
        rows = rows_of(client, record["id"])
        assert {r["image"] for r in rows} == names  # read back from the store (S3) by ranges
        assert sorted(r["frame"] for r in rows if r["image"] == min(names)) == list(range(fps))


@pytest.mark.parametrize("fps", [0, 31, "fast", True])
def test_a_bad_video_fps_is_a_400(client, videos, fps):
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(videos),
                                         "video_fps": fps})
    assert resp.status_code == 400 and "video_fps" in resp.get_json()["error"]["message"]


def test_a_worker_killed_mid_video_loses_no_frame_and_duplicates_none(stack):
    folder = stack.root / "long-video"
    gen.write_video(folder / "viewer.mp4", gen.steady(30.0), size=(160, 120))
    stack.stop_workers()  # planned by these workers' sidecars: 2 s shards
    env = {"FACESENSE_VIDEO_SHARD_SECONDS": "2", "FACESENSE_VIDEO_FPS": "10"}
    victim, survivor = stack.start_workers(2, env=env)
    job_id = stack.submit(folder)
    index = stack.kill_holding(job_id, victim, done=40)
    record = stack.wait(job_id, 240)
    assert record["status"] == "succeeded", record
    rows = stack.rows(job_id)
    assert sorted(r["frame"] for r in rows) == list(range(301))  # 30.0003 s at 10 a second
    assert [r["t"] for r in sorted(rows, key=lambda r: r["frame"])] == [
        round(k / 10, 3) for k in range(301)]
    assert not any(r["error"] for r in rows)
    assert stack.attempts(job_id)[index] == 2  # its shard delivered again, counted once
    assert survivor.poll() is None
    stack.stop_workers()
