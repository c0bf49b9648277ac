"""A video job's timeline through the real API over HTTP (Redis and S3 behind it): timeline.csv,
Client.timeline_frame(), `facesense results --timeline-csv`, the curves after `--wait`, and the
job fields timeline_bin_s and baseline. The job's results are written by write_results as the
finaliser writes them (decoding videos is tests/test_video*.py's)."""

from __future__ import annotations

import csv
import io
import random
from contextlib import redirect_stdout

import pytest
import redis

from api import create_app
from cli.main import main
from facesense.client import ApiError, Client
from facesense.outputs.results import bounded, write_results
from facesense.outputs.timeline import options
from facesense.state.records import JobRecords
from facesense.state.status import JobStatus
from facesense.storage import store_from_settings
from facesense.storage.layout import job_key
from tests.imagegen import make_folder
from tests.servers import serving

CLASSES = ["happy", "sad"]


def video_rows(seed: int = 2) -> list[dict]:
    """Two variants of three viewers, 5 fps from 1 s before the ad's start to 6 s into it."""
    rng = random.Random(seed)
    rows = []
    for group, smile in (("ad_a", 0.7), ("ad_b", 0.3)):
        for v in range(3):
            for frame in range(35):
                label = "happy" if rng.random() < smile else "sad"
                rows.append({"image": f"{group}/viewer{v}.mp4", "group": group, "face": 0,
                             "box": [1, 2, 40, 50], "face_score": 0.98, "label": label,
                             "confidence": 0.9, "probs": {"happy": 0.9, "sad": 0.1}
                             if label == "happy" else {"happy": 0.1, "sad": 0.9},
                             "error": None, "t": round(frame / 5 - 1, 3), "frame": frame})
    return rows


def finished_job(settings, rows: list[dict], **fields) -> str:
    """A succeeded scoring job whose results are these rows, written as the finaliser does."""
    store = store_from_settings(settings)
    jobs = JobRecords(redis.Redis.from_url(settings.redis_url), store)
    record = jobs.create("classify", source="tests", model_version="v", classes=CLASSES,
                         faces=True, **fields)
    summary = write_results(store, record["id"], rows, CLASSES, faces=True, **options(record))
    jobs.update(record["id"], total=len(rows), done=len(rows))
    jobs.set_status(record["id"], JobStatus.SUCCEEDED, summary=bounded(summary, 20),
                    results={"results.jsonl": job_key(record["id"], "results.jsonl")})
    return record["id"]


@pytest.fixture(scope="module")
def server(settings):
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def video_job(settings) -> str:
    return finished_job(settings, video_rows(), timeline_bin_s=0.5, baseline=True)


def test_timeline_csv_the_frame_and_the_cli_give_the_summarys_curve(server, video_job, tmp_path):
    api = Client(server)
    summary = api.summary(video_job)
    assert summary["timeline_bin_s"] == 0.5 and summary["baseline"] is True
    want = [(g, b["t0"], b["t1"], b["viewers"], c, b["share"][c], *(b["ci95"][c] or [None] * 2))
            for g, t in summary["groups"].items() for b in t["timeline"] for c in CLASSES]
    assert len(want) == 2 * 12 * 2  # 2 groups, 6 s in half seconds, 2 labels

    out = io.BytesIO()
    assert api.save_timeline_csv(video_job, out) == len(out.getvalue())
    table = list(csv.reader(io.StringIO(out.getvalue().decode())))
    assert table[0] == ["group", "t0", "t1", "viewers", "label", "share", "ci95_low", "ci95_high"]
    assert [(r[0], float(r[1]), float(r[2]), int(r[3]), r[4], float(r[5]), float(r[6]),
             float(r[7])) for r in table[1:]] == want

    frame = api.timeline_frame(video_job)
    assert list(frame.columns) == table[0]
    assert [tuple(x) for x in frame.itertuples(index=False)] == want
    assert frame["share"].min() < 0  # baseline: changes from each viewer's resting face

    path = tmp_path / "timeline.csv"
    assert main(["--api", server, "results", video_job, "--timeline-csv", str(path)]) == 0
    assert path.read_bytes() == out.getvalue()


def test_a_photo_job_has_no_timeline_csv(server, settings):
    rows = [{"image": f"a/{i}.jpg", "group": "a", "face": 0, "box": [0, 0, 9, 9],
             "face_score": 0.9, "label": CLASSES[i % 2], "confidence": 0.9, "probs": None,
             "error": None, "t": None, "frame": None} for i in range(4)]
    job_id = finished_job(settings, rows)
    with pytest.raises(ApiError) as caught:
        Client(server).timeline_frame(job_id)
    assert caught.value.status == 404 and "no timeline" in str(caught.value)
    assert "timeline" not in Client(server).summary(job_id)["groups"]["a"]


def test_the_record_keeps_peaks_and_viewer_shares_and_wait_prints_the_curves(server, video_job):
    record = Client(server).job(video_job)
    tally = record["summary"]["groups"]["ad_a"]
    assert "timeline" not in tally and "per_viewer" not in tally  # the record stays small
    assert tally["viewers"] == 3 and set(tally["peak"]) == set(CLASSES)
    text = io.StringIO()
    with redirect_stdout(text):
        assert main(["--api", server, "status", video_job, "--wait"]) == 0
    lines = text.getvalue().splitlines()
    assert any("Welch t-test over viewers, Holm-adjusted" in line for line in lines)
    assert any(line.startswith("viewers per group to detect") for line in lines)
    start = next(i for i, line in enumerate(lines) if line.startswith("timeline over viewers"))
    assert "0.5 s" in lines[start] and "baseline subtracted" in lines[start]
    summary = Client(server).summary(video_job)
    curves = {}
    for group in ("ad_a", "ad_b"):
        head = next(i for i, line in enumerate(lines) if line.startswith(f"{group}  3 viewers"))
        for label, line in zip(CLASSES, lines[head + 1: head + 3], strict=True):
            curves[group, label] = line.split("|")[1]
            assert line.split()[0] == label and len(curves[group, label]) == 12  # a char a bin
            peak = summary["groups"][group]["peak"][label]
            assert f"peak {peak['share'] * 100:.1f}% at {peak['t0']:g}-{peak['t1']:g} s" in line
    for label in CLASSES:  # a label's scale spans both variants: '@' at the higher peak
        top = max(("ad_a", "ad_b"), key=lambda g: summary["groups"][g]["peak"][label]["share"])
        assert curves[top, label][int(summary["groups"][top]["peak"][label]["t0"] / 0.5)] == "@"


def test_the_job_fields_are_checked_and_recorded(client, base_dir):
    folder = base_dir / "timeline-fields"
    make_folder(folder, 2, groups=("a",), max_side=64)
    body = {"type": "classify", "source": str(folder), "timeline_bin_s": 0.25, "baseline": True}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.get_json()
    record = resp.get_json()
    assert (record["timeline_bin_s"], record["baseline"]) == (0.25, True)
    client.post(f"/v1/jobs/{record['id']}/cancel")
    for field, value, says in (("timeline_bin_s", 0.01, "from 0.1 to 60"),
                               ("timeline_bin_s", "1", "expected"),
                               ("baseline", "yes", "expected bool")):
        resp = client.post("/v1/jobs", json={**body, field: value})
        assert resp.status_code == 400 and field in resp.get_json()["error"]["message"]
        assert says in resp.get_json()["error"]["message"]
    with (folder / "a").iterdir().__next__().open("rb") as fh:
        resp = client.post("/v1/jobs", data={"type": "classify", "timeline_bin_s": "2",
                                             "baseline": "true", "files": [(fh, "x.png")]})
    assert resp.status_code == 202, resp.get_json()
    record = resp.get_json()
    assert record["timeline_bin_s"] == 2.0 and record["baseline"] is True
    client.post(f"/v1/jobs/{record['id']}/cancel")
