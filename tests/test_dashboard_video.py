"""Reaction videos in the dashboard: a sampled frame's thumbnail is that frame decoded from the
job's video (a face row's: its face's square); a real job scored by the worker shows its curves
and every frame, with its t, in the browser; on a phone the curve fits and a touched bin's
tooltip gives each variant's share; a baseline curve is drawn below zero and explained."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from PIL import Image

from facesense.imaging import face_square
from facesense.outputs.thumbnails import FACE_MARGIN
from tests.browser import wait_for_js
from tests.test_dashboard import finished_job
from tests.test_dashboard_timeline import (
    DASH,
    FPS,
    check_chart,
    drawn,
    finished_video_job,
    pct,
    video_rows,
)
from tests.videogen import BITS, BLOCK, read_stamp, steady, write_video

pytestmark = pytest.mark.slow

BOX = [10, 20, 130, 140]  # a face's box in the 320 x 240 test video's frames


def test_a_video_frames_thumbnail_is_that_frame_decoded_from_the_jobs_video(client, settings,
                                                                           unique):
    # Given a finished video job on a folder: a 3 s 30 fps video, each frame's number drawn in
    # its top-left corner, sampled at 5 fps (sample k is frame 6k); a row for sample 7 whole,
    # one for a face in it and one for a face in sample 10 (faces near the corner)
    folder = Path(settings.allowed_roots[0]) / f"video-thumbs-{unique}"
    write_video(folder / "ad" / "viewer.mp4", steady(3.0))
    at = {"image": "ad/viewer.mp4", "group": "ad", "t": 1.4, "frame": 7, "error": None}
    scored = {"label": "happy", "confidence": 0.8, "probs": {"happy": 0.8, "sad": 0.2}}
    rows = [{**at, "face": None, "label": None, "confidence": None, "probs": None},
            {**at, "face": 0, "box": BOX, "face_score": 0.99, **scored},
            {**at, "t": 2.0, "frame": 10, "face": 0, "box": BOX, "face_score": 0.99, **scored}]
    job_id = finished_job(settings, rows, source=folder.as_uri(), faces=True, video_fps=FPS)

    # When the gallery lists its rows, Then each card has the frame's t, frame and a thumbnail
    cards = client.get(f"/ui/api/jobs/{job_id}/gallery").get_json()["rows"]
    assert [(c["t"], c["frame"]) for c in cards] == [(1.4, 7), (1.4, 7), (2.0, 10)]
    assert all(c["thumb"] == f"/ui/api/jobs/{job_id}/thumbs/{c['index']}" for c in cards)

    # and the whole frame's thumbnail is video frame 42 (sample 7 at 5 fps of 30), shrunk
    whole = client.get(cards[0]["thumb"])
    assert whole.status_code == 200 and whole.mimetype == "image/jpeg"
    image = Image.open(io.BytesIO(whole.data))
    assert image.size == (128, 96)
    assert read_stamp(image.resize((320, 240), Image.BILINEAR)) == 42

    # and a face row's is its face's square (the numbers' corner in it), of its own frame
    x0, y0, x1, y1 = face_square(BOX, (320, 240), FACE_MARGIN)
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 >= BLOCK * BITS
    faces = [Image.open(io.BytesIO(client.get(c["thumb"]).data)) for c in cards[1:]]
    assert [f.size for f in faces] == [(128, 128)] * 2
    assert [read_stamp(f.resize((x1, y1), Image.BILINEAR)) for f in faces] == [42, 60]


def test_a_real_video_job_shows_its_curves_and_its_frames_in_the_gallery(page, server, worker,
                                                                       base_dir):
    # Given reaction videos scored by the real worker: two variants, two viewers each, 2 s
    root = base_dir / "dashboard-videos"
    for variant, seconds in (("variant_a", 2.0), ("variant_b", 1.6)):
        for viewer in range(2):
            write_video(root / variant / f"viewer_{viewer}.mp4", steady(seconds))
    resp = requests.post(f"{server}/v1/jobs", json={"type": "classify", "source": str(root),
                                                    "video_fps": FPS, "faces": True}, timeout=30)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]

    # When its page is open until the job has finished
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("svg[data-chart=timeline] circle.peak", timeout=240_000)

    # Then the chart draws each variant's curve as summary.json has it
    summary = requests.get(f"{server}/v1/jobs/{job_id}/summary", timeout=10).json()
    assert set(summary["groups"]) == {"variant_a", "variant_b"}
    check_chart(drawn(page), summary, page.eval_on_selector("#timeline-label", "s => s.value"))
    assert drawn(page)["domain"][1] == 3.0  # 2 s and a frame: its last sample is at t = 2.0

    # and the gallery's cards are the sampled frames, each with its t, and the thumbnail of
    # its face decoded from the video
    page.wait_for_selector("#gallery figure[data-t] img")
    images = page.locator("#gallery figure img")
    for i in range(images.count()):  # lazy images load once scrolled to
        images.nth(i).scroll_into_view_if_needed()
    wait_for_js(page, "[...document.querySelectorAll('#gallery figure')].every(f => "
                      "f.querySelector('img') && f.querySelector('img').complete)")
    shown = page.eval_on_selector_all("#gallery figure", """els => els.map(e => [
        Number(e.dataset.frame), e.querySelector('.at').textContent,
        e.querySelector('img').naturalWidth])""")
    rows = requests.get(f"{server}/ui/api/jobs/{job_id}/gallery", timeout=10).json()["rows"]
    assert len(shown) == len(rows) == 2 * 11 + 2 * 9  # every sample: 2 s and 1.6 s (+ a frame)
    assert [s[:2] for s in shown] == [[r["frame"], f"t = {r['t']:.1f} s · frame {r['frame']}"]
                                      for r in rows]
    widths = {width for *_, width in shown}
    assert 0 not in widths and max(widths) <= 128  # every face's square decoded and drawn


def test_on_a_phone_the_curve_fits_and_a_bins_tooltip_gives_each_variants_share(page, server,
                                                                                  settings):
    # Given a finished video job, on a 390 px phone
    job_id = finished_video_job(settings, video_rows(seed=5))
    summary = requests.get(f"{server}/v1/jobs/{job_id}/summary", timeout=10).json()
    page.set_viewport_size({"width": 390, "height": 844})

    # When its page opens
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("svg[data-chart=timeline] circle.peak")

    # Then nothing is wider than the screen, the curve's chart included
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert page.eval_on_selector("svg[data-chart=timeline]",
                                 "e => e.getBoundingClientRect().right") <= 390

    # and touching the bin from 3 s to 4 s shows both variants' shares there with their intervals
    page.locator("svg[data-chart=timeline] rect.hit").nth(3).dispatch_event("pointerdown")
    tip = page.locator("#timeline .chart-tip")
    tip.wait_for(state="visible")
    text = tip.text_content()
    assert text.startswith(f"3{DASH}4 s: ")
    for group, tally in summary["groups"].items():
        b = tally["timeline"][3]
        share, (lo, hi) = b["share"]["happy"], b["ci95"]["happy"]
        assert f"{group} {pct(share)}, 95% CI {pct(lo)}{DASH}{pct(hi)} ({b['viewers']} viewers)" in text


def test_baseline_shares_below_zero_are_drawn_and_explained(page, server, settings):
    # Given viewers with a resting face before the ad (t < 0) and baseline on: shares may be < 0
    rows = []
    for viewer in range(3):
        for k in range(-10, 20):  # 2 s at rest (happy), then 4 s of the ad (happy only at 1-2 s)
            t = round(k / FPS, 3)
            happy = t < 0 or 1 <= t < 2 or (viewer == 0 and t >= 3)
            rows.append({"image": f"ad/v{viewer}.mp4", "group": "ad", "t": t, "frame": k + 10,
                         "face": 0, "box": [0, 0, 9, 9], "face_score": 0.9,
                         "label": "happy" if happy else "sad", "confidence": 0.7,
                         "probs": {"happy": 0.7, "sad": 0.3}, "error": None})
    job_id = finished_video_job(settings, rows, baseline=True)
    summary = requests.get(f"{server}/v1/jobs/{job_id}/summary", timeout=10).json()
    assert summary["baseline"] and min(b["share"]["happy"]
                                       for b in summary["groups"]["ad"]["timeline"]) < 0

    # When its page opens
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("svg[data-chart=timeline] circle.peak")

    # Then the curve is drawn to scale below zero, and the note says what baseline did
    check_chart(drawn(page), summary, "happy")
    ticks = page.eval_on_selector_all("svg[data-chart=timeline] text.tick",
                                      "els => els.map(e => e.textContent)")
    assert any(t.startswith("-") and t.endswith("%") for t in ticks)
    assert "resting face" in page.text_content("#baseline-note")
