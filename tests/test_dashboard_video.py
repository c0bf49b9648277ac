"""Reaction videos in the dashboard's gallery: a sampled frame's thumbnail is that frame decoded
from the job's video (a face row's: its face's square), and a real job scored by the worker
shows its curves and every frame, with its t, in the browser."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from PIL import Image

from api import create_app
from facesense.imaging import face_square
from facesense.outputs.thumbnails import FACE_MARGIN
from tests.servers import serving
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, finished_job, wait_for_js
from tests.test_dashboard_timeline import FPS, check_chart, drawn
from tests.videogen import BITS, BLOCK, read_stamp, steady, write_video

pytestmark = pytest.mark.slow

BOX = [10, 20, 130, 140]  # a face's box in the 320 x 240 test video's frames


@pytest.fixture(scope="module")
def server(settings, model_version):
    """The real Flask app on the tests' Redis and S3 store."""
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's; Playwright never downloads one)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh tab, 1280 px wide."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


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
