"""A video job's page in headless Chromium: the timeline card draws, per ad variant, the chosen
label's share over the ad as a line with its 95% band and its peak where the summary puts it; a
label chooser redraws it; the shares and comparisons count viewers; a photo job has no such card;
the gallery shows each frame's t. (Baseline, phones, frames' thumbnails and a real job:
test_dashboard_video.py.)"""

from __future__ import annotations

import random
import re
from decimal import ROUND_HALF_UP, Decimal

import pytest
import redis
import requests

from facesense.outputs.results import bounded, write_results
from facesense.state.records import JobRecords
from facesense.state.status import JobStatus
from facesense.storage import store_from_settings
from facesense.storage.layout import job_key
from tests.test_dashboard import finished_job

pytestmark = pytest.mark.slow

CLASSES = ["happy", "sad"]
FPS, SECONDS = 5, 8  # frames sampled a second; the ad's length
DASH = "\u2013"  # the en dash the page writes between a bin's start and end


def video_rows(seed: int = 11) -> list[dict]:
    """Face rows of 4 viewers per variant: ad_a smiles most late in the ad, ad_b early; viewer
    3 of ad_b looks away from 5 s on (no face), so its late bins have fewer viewers."""
    rng, rows = random.Random(seed), []
    for group, peak_at in (("ad_a", 6), ("ad_b", 1)):
        for viewer in range(4):
            key = f"{group}/viewer_{viewer}.mp4"
            for k in range(FPS * SECONDS):
                t = round(k / FPS, 3)
                at = {"image": key, "group": group, "t": t, "frame": k}
                if group == "ad_b" and viewer == 3 and t >= 5:
                    rows.append({**at, "face": None, "label": None, "confidence": None,
                                 "probs": None, "error": None})
                    continue
                p = 0.9 if abs(t - peak_at) < 1 else 0.25 + 0.1 * viewer
                happy = rng.random() < p
                rows.append({**at, "face": 0, "box": [10, 12, 90, 100], "face_score": 0.99,
                             "label": "happy" if happy else "sad", "confidence": 0.8,
                             "probs": {"happy": 0.8, "sad": 0.2} if happy
                             else {"happy": 0.2, "sad": 0.8}, "error": None})
    return rows


def finished_video_job(settings, rows: list[dict], bin_s: float = 1.0,
                       baseline: bool = False) -> str:
    """A succeeded faces job with video rows, its results written as the finaliser writes them
    (summary.json with the curves; the record keeps the bounded summary, without them)."""
    store = store_from_settings(settings)
    jobs = JobRecords(redis.Redis.from_url(settings.redis_url), store)
    record = jobs.create("classify", source="tests", model_version="v", classes=CLASSES,
                         faces=True, videos=True, timeline_bin_s=bin_s, baseline=baseline)
    summary = write_results(store, record["id"], rows, CLASSES, faces=True, videos=True,
                            timeline_bin_s=bin_s, baseline=baseline)
    jobs.update(record["id"], total=len(rows), done=len(rows))
    jobs.set_status(record["id"], JobStatus.SUCCEEDED, summary=bounded(summary, 20),
                    results={"results.jsonl": job_key(record["id"], "results.jsonl")})
    return record["id"]


def points(d: str) -> list[list[tuple[float, float]]]:
    """An SVG path's sub-paths as lists of (x, y)."""
    runs = []
    for command, x, y in re.findall(r"([ML])\s*(-?[\d.]+),(-?[\d.]+)", d):
        if command == "M":
            runs.append([])
        runs[-1].append((float(x), float(y)))
    return runs


def drawn(tab) -> dict:
    """The timeline chart as data: its scale, and per variant its line, band and peak."""
    return tab.eval_on_selector("svg[data-chart=timeline]", """svg => ({
        label: svg.dataset.label,
        domain: svg.dataset.xDomain.split(',').map(Number),
        range: svg.dataset.xRange.split(',').map(Number),
        grid: [...svg.querySelectorAll('line.grid')].map(l => Number(l.getAttribute('y1'))),
        lines: Object.fromEntries([...svg.querySelectorAll('path.line')]
                                  .map(p => [p.dataset.group, p.getAttribute('d')])),
        bands: Object.fromEntries([...svg.querySelectorAll('path.band')]
                                  .map(p => [p.dataset.group, p.getAttribute('d')])),
        peaks: Object.fromEntries([...svg.querySelectorAll('circle.peak')].map(c => [c.dataset.group,
            {t0: Number(c.dataset.t0), t1: Number(c.dataset.t1), share: Number(c.dataset.share),
             cx: Number(c.getAttribute('cx')), cy: Number(c.getAttribute('cy'))}]))})""")


def check_chart(chart: dict, summary: dict, label: str) -> None:
    """The chart shows the summary's curves of label: a point per bin with viewers at the bin's
    middle, heights linear in the share, the band's run per bin with an interval, and each
    variant's peak at the bin the summary names, on its line."""
    (d0, d1), (r0, r1) = chart["domain"], chart["range"]
    X = lambda t: r0 + (t - d0) / (d1 - d0) * (r1 - r0)  # noqa: E731
    groups = summary["groups"]
    assert chart["label"] == label
    assert set(chart["lines"]) == set(chart["bands"]) == set(chart["peaks"]) == set(groups)
    assert d1 == max(b["t1"] for t in groups.values() for b in t["timeline"])
    heights = []  # (share, y) of every point: one straight line if the scale is linear
    for group, tally in groups.items():
        bins = [b for b in tally["timeline"] if b["share"][label] is not None]
        line = [p for run in points(chart["lines"][group]) for p in run]
        assert [x for x, _ in line] == pytest.approx([X((b["t0"] + b["t1"]) / 2) for b in bins],
                                                     abs=0.06)
        heights += [(b["share"][label], y) for b, (_, y) in zip(bins, line, strict=True)]
        with_ci = [b for b in bins if b["ci95"][label]]
        band = [p for run in points(chart["bands"][group]) for p in run]
        assert with_ci and len(band) == 2 * len(with_ci)  # upper edge, then lower edge back
        peak, mark = tally["peak"][label], chart["peaks"][group]
        assert (mark["t0"], mark["t1"], mark["share"]) == (peak["t0"], peak["t1"], peak["share"])
        assert mark["cx"] == pytest.approx(X((peak["t0"] + peak["t1"]) / 2), abs=1e-6)
        assert peak["share"] == max(b["share"][label] for b in bins)
        assert any(abs(x - mark["cx"]) < 0.06 and abs(y - mark["cy"]) < 0.06 for x, y in line)
    top, bottom = min(chart["grid"]), max(chart["grid"])  # the y axis' first and last ticks
    for group in groups:  # every line and band inside the axis: none drawn past its ticks
        drawn_ys = [y for d in (chart["lines"][group], chart["bands"][group])
                    for run in points(d) for _, y in run]
        assert all(top - 0.06 <= y <= bottom + 0.06 for y in drawn_ys), group
    (s_lo, y_lo), (s_hi, y_hi) = min(heights), max(heights)
    if s_hi == s_lo:  # one share throughout (a real job's one face): one height
        assert {round(y, 1) for _, y in heights} == {round(y_lo, 1)}
        return
    assert y_hi < y_lo  # a larger share is drawn higher
    for share, y in heights:
        assert y == pytest.approx(y_lo + (share - s_lo) / (s_hi - s_lo) * (y_hi - y_lo), abs=0.1)


@pytest.fixture(scope="module")
def video_job(settings) -> str:
    """A finished video job: two ad variants of four viewers each, 1 s bins over 8 s."""
    return finished_video_job(settings, video_rows())


def opened(page, server: str, job_id: str) -> dict:
    """The job's page, opened until its curve is drawn; its summary.json."""
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("svg[data-chart=timeline] circle.peak")
    return requests.get(f"{server}/v1/jobs/{job_id}/summary", timeout=10).json()


def test_a_video_jobs_page_draws_each_variants_curve_band_and_peak(page, server, video_job,
                                                                   tmp_path):
    # Given a finished video job whose record keeps no curve (summary.json has them)
    assert "timeline" not in requests.get(f"{server}/v1/jobs/{video_job}",
                                          timeout=10).json()["summary"]["groups"]["ad_a"]

    # When its page opens
    summary = opened(page, server, video_job)

    # Then it draws the first label's curves as summary.json has them, peaks where it says
    chart = drawn(page)
    check_chart(chart, summary, "happy")
    assert summary["groups"]["ad_a"]["peak"]["happy"]["t0"] > summary["groups"]["ad_b"]["peak"]["happy"]["t0"]
    # and a bin with one viewer less (viewer 3 of ad_b looked away) is still drawn, from 3
    late = [b for b in summary["groups"]["ad_b"]["timeline"] if b["t0"] >= 5]
    assert late and all(b["viewers"] == 3 for b in late)
    shot = tmp_path / "dashboard-timeline.png"
    page.locator("#timeline").screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000  # a drawn card, not an empty one
    assert "null" not in page.text_content("#timeline") and page.query_selector("#baseline-note") is None

    # and the text alternative names each variant's peak and viewers
    rows = page.eval_on_selector_all("#timeline-peaks tbody tr", "els => els.map(e => "
                                     "[e.dataset.group, ...[...e.children].map(c => c.textContent)])")
    for group, name, viewers, at, share, _ in rows:
        peak = summary["groups"][group]["peak"]["happy"]
        assert name == group and int(viewers) == summary["groups"][group]["viewers"] == 4
        assert at == f"{peak['t0']:g}{DASH}{peak['t1']:g} s" and share == pct(peak["share"])

    # When the label chooser picks the other label
    page.select_option("#timeline-label", "sad")
    page.wait_for_selector("svg[data-chart=timeline][data-label=sad]")

    # Then every line is redrawn from that label's shares, its peaks too
    switched = drawn(page)
    check_chart(switched, summary, "sad")
    assert all(switched["lines"][g] != chart["lines"][g] for g in summary["groups"])
    assert page.text_content("#timeline-peaks thead").count("Peak of sad") == 1


def test_the_curves_table_and_the_statistics_count_viewers(page, server, video_job):
    # Given the video job's page
    summary = opened(page, server, video_job)

    # When the curves' table is opened (it is built then)
    assert page.query_selector("#timeline-bins table") is None
    page.click("#timeline-bins summary")
    page.wait_for_selector("#timeline-bins tbody tr")

    # Then it has a row per bin and a column per variant, each cell the summary's bin
    table = page.eval_on_selector_all("#timeline-bins tbody tr", "els => els.map(e => "
                                      "[...e.children].map(c => c.textContent))")
    heads = page.eval_on_selector_all("#timeline-bins thead th", "els => els.map(e => e.textContent)")
    bins = {g: t["timeline"] for g, t in summary["groups"].items()}
    assert len(table) == max(len(b) for b in bins.values()) == SECONDS
    for i, row in enumerate(table):
        for group, cell in zip(heads[1:], row[1:], strict=True):
            b = bins[group][i]
            lo, hi = b["ci95"]["happy"]
            assert cell == f"{pct(b['share']['happy'])}, 95% CI {pct(lo)}{DASH}{pct(hi)} · {b['viewers']}"

    # and the shares and comparisons say they are over viewers (Welch's t-tests), not frames
    assert "mean over its viewers" in page.text_content("#viewers-note")
    page.wait_for_selector("#comparisons tbody tr")
    assert {c["test"] for c in summary["comparisons"]} == {"welch_over_viewers"}
    assert "Welch's t-test on each viewer's share" in page.text_content("#comparisons-note")
    assert "Viewers per group to detect" in page.text_content("#comparisons thead")
    if any(c["sample_size"] for c in summary["comparisons"]):
        note = page.text_content("#needed-note")
        assert "how many viewers per group" in note and "Welch's test" in note


def test_the_gallery_says_which_frame_and_when(page, server, video_job):
    # Given the video job's page
    opened(page, server, video_job)
    # Then each gallery card says its row's t and frame
    page.wait_for_selector("#gallery figure[data-t]")
    shown = page.eval_on_selector_all("#gallery figure", "els => els.map(e => [e.dataset.index, "
                                      "e.querySelector('.at')?.textContent])")
    api = requests.get(f"{server}/ui/api/jobs/{video_job}/gallery", timeout=10).json()["rows"]
    assert [int(i) for i, _ in shown] == [r["index"] for r in api]
    assert [text for _, text in shown] == [f"t = {r['t']:.1f} s · frame {r['frame']}" for r in api]
    assert shown[1][1] == "t = 0.2 s · frame 1"


def pct(x: float) -> str:
    """A share as the page writes it (format.js's pct: toFixed rounds an exact tie up)."""
    places = Decimal(1) if x >= 0.995 or x == 0 else Decimal("0.1")
    return f"{Decimal(x * 100).quantize(places, ROUND_HALF_UP)}%"


def test_a_photo_job_has_no_timeline_card(page, server, settings):
    # Given a finished photo job (no row has a t)
    rows = [{"image": f"ad_{g}/{i}.jpg", "group": f"ad_{g}", "label": "happy" if i % 2 else "sad",
             "confidence": 0.9, "probs": {"happy": 0.5, "sad": 0.5}, "error": None}
            for g in "ab" for i in range(6)]
    job_id = finished_job(settings, rows)
    assert "timeline_bin_s" not in requests.get(f"{server}/v1/jobs/{job_id}/summary",
                                                timeout=10).json()

    # When its page has drawn its summary cards and gallery
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("#gallery figure")

    # Then there is no timeline card, and no card says t
    assert page.query_selector("table.summary") is not None
    assert page.query_selector("#timeline") is None
    assert page.query_selector("#gallery .at") is None
    assert page.query_selector("#viewers-note") is None
    assert "Fisher's exact test" in page.text_content("#comparisons-note")
