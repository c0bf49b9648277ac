"""The dashboard at any width, in headless Chromium against the real API, Redis and S3 store:
no horizontal overflow on a 390 px phone, full-width charts with tooltips and PNG / SVG
downloads, names and tags (escaped) and filters on the job list, a running job's pace."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from facesense.registry import Registry
from facesense.state.records import JobRecords
from facesense.state.status import JobStatus
from facesense.storage import store_from_settings
from tests.browser import wait_for_js
from tests.test_dashboard import finished_job, screenshot

pytestmark = pytest.mark.slow
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"


def rows(groups: dict[str, tuple[int, int]]) -> list[dict]:
    """Result rows: per group, so many happy and so many sad images."""
    out = []
    for group, (happy, sad) in groups.items():
        out += [{"image": f"{group}/{i}.jpg", "group": group,
                 "label": "happy" if i < happy else "sad", "confidence": 0.9,
                 "probs": {"happy": 0.9, "sad": 0.1} if i < happy else {"happy": 0.1, "sad": 0.9},
                 "error": None} for i in range(happy + sad)]
    return out


@pytest.fixture
def tab(browser):
    """A fresh tab per test; the width is set by each test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def campaign_job(settings):
    """A finished, named and tagged scoring job over four ad variants with long names."""
    groups = {"spring_variant_with_a_long_name_a": (12, 8), "spring_variant_b": (9, 11),
              "summer_c": (36, 4), "summer_d": (18, 22)}
    return finished_job(settings, rows(groups), source="s3://campaigns/2026/spring-ad-test-"
                        "with-a-very-long-prefix-name/", name="Spring TV ad test <b>week 49</b>",
                        tags=["spring", "tv"])


@pytest.fixture(scope="module")
def trained_version(settings):
    """A model version with per-epoch history, so its page draws the training curves."""
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5 + e / 20,
                "val_accuracy": 0.45 + e / 20, "lr": 0.001, "seconds": 3.0} for e in range(1, 6)]
    metrics = {"accuracy": 0.7, "loss": 0.4, "confusion_matrix": [[7, 3], [3, 7]],
               "per_class": {c: {"precision": 0.7, "recall": 0.7, "f1": 0.7, "support": 10}
                             for c in ("happy", "sad")}, "best_epoch": 5, "epochs_run": 5}
    return Registry(store_from_settings(settings)).register(
        b"w", {"classes": ["happy", "sad"], "metrics": metrics},
        files={"history.json": json.dumps(history).encode()})["version"]


def test_every_page_fits_a_390_px_phone_without_horizontal_overflow(tab, server, campaign_job,
                                                                    trained_version, tmp_path):
    tab.set_viewport_size({"width": 390, "height": 844})
    pages = [("#/", "#jobs-table tbody tr[data-job]"),
             (f"#/jobs/{campaign_job}", "#statistics .chart-box svg"),
             ("#/models", "#models-table tbody tr"),
             (f"#/models/{trained_version}", "#curves .chart-box svg")]
    for i, (hash_, ready) in enumerate(pages):
        tab.goto(f"{server}/{hash_}")
        tab.wait_for_selector(ready)
        assert tab.evaluate(OVERFLOW) <= 0, f"{hash_} is wider than 390 px"
        # every chart fits its card too
        widths = tab.eval_on_selector_all(".chart-box svg", "els => els.map(e => "
                                          "e.getBoundingClientRect().right)")
        assert all(right <= 390 for right in widths)
        screenshot(tab, tmp_path, f"phone-{i}.png", docs=False)  # artifacts to look at


def test_charts_are_full_width_with_tooltips_and_png_and_svg_downloads(tab, server, campaign_job,
                                                                       trained_version):
    tab.goto(f"{server}/#/jobs/{campaign_job}")
    tab.wait_for_selector("[data-chart-box] svg rect[data-label]")
    # Full width: the share chart takes its card's width (not half of it)
    card, chart = tab.evaluate("""() => { const c = document.querySelector('[data-chart-box]');
        return [c.closest('.card').clientWidth, c.querySelector('svg').clientWidth]; }""")
    assert chart >= 0.9 * (card - 40)

    # A tooltip names the mark under the pointer
    mark = tab.locator("rect[data-group='summer_c'][data-label='happy']").first
    mark.hover()
    tip = tab.locator("[data-chart-box] .chart-tip").first
    tip.wait_for(state="visible")
    assert tip.text_content() == "summer_c: happy 90.0%"
    tab.mouse.move(1, 1)
    tip.wait_for(state="hidden")

    # SVG: a standalone file with its styles; PNG: the same drawing at twice its size
    box = tab.locator("[data-chart-box]").first
    name = box.get_attribute("data-chart-box")
    with tab.expect_download() as svg_download:
        box.locator(".download-svg").click()
    assert svg_download.value.suggested_filename == f"{name}.svg"
    svg = Path(svg_download.value.path()).read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "<style>" in svg and "summer_c" in svg
    with tab.expect_download() as png_download:
        box.locator(".download-png").click()
    png = Path(png_download.value.path()).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    view_width = int(float(box.locator("svg").get_attribute("viewBox").split()[2]))
    assert int.from_bytes(png[16:20], "big") == 2 * view_width

    # The training curves are full width too, one above the other, each downloadable
    tab.goto(f"{server}/#/models/{trained_version}")
    tab.wait_for_selector("#curves [data-chart-box='accuracy'] svg circle")
    boxes = tab.eval_on_selector_all("#curves [data-chart-box]", "els => els.map(e => "
                                     "[e.dataset.chartBox, e.getBoundingClientRect().width, "
                                     "e.querySelectorAll('.chart-download').length])")
    assert [b[0] for b in boxes] == ["loss", "accuracy"] and all(b[2] == 2 for b in boxes)
    assert min(b[1] for b in boxes) >= 0.9 * (card - 40)
    tab.locator("[data-chart-box='loss'] svg circle").first.hover()
    assert "epoch 1" in tab.locator("[data-chart-box='loss'] .chart-tip").text_content()


def test_the_job_list_shows_names_escaped_and_tags_and_filters_them(tab, server, settings,
                                                                    campaign_job):
    hostile = finished_job(settings, rows({"a": (1, 1)}), name='<img src=x onerror="alert(1)">',
                           tags=["print"])
    tab.goto(f"{server}/#/")
    tab.wait_for_selector(f"tr[data-job='{hostile}'] .job-name")
    assert tab.text_content(f"tr[data-job='{hostile}'] .job-name") == \
        '<img src=x onerror="alert(1)">'
    assert tab.locator(f"tr[data-job='{hostile}'] img").count() == 0  # text, never markup
    row = f"tr[data-job='{campaign_job}']"
    assert tab.eval_on_selector_all(f"{row} .tag", "els => els.map(e => e.textContent)") == \
        ["spring", "tv"]
    assert "spring-ad-test" in tab.text_content(f"{row} .source")

    # Filtering by tag keeps only the jobs that carry it; by name prefix, any case
    tab.fill("#filter-tag", "print")
    tab.click("#job-filters button[type=submit]")
    wait_for_js(tab, f"[...document.querySelectorAll('#jobs-table tr[data-job]')]"
                     f".map(r => r.dataset.job).join() === '{hostile}'")
    tab.fill("#filter-tag", "")
    tab.fill("#filter-name", "spring tv")
    tab.click("#job-filters button[type=submit]")
    wait_for_js(tab, f"document.querySelector('#jobs-table tr[data-job]')?.dataset.job === "
                     f"'{campaign_job}'")
    tab.select_option("#filter-status", "running")
    tab.wait_for_selector("#jobs-table td.muted")
    assert tab.text_content("#jobs-table td.muted") == "No jobs match."


def test_a_running_job_shows_its_rate_and_time_left(tab, server, settings):
    jobs = JobRecords(redis.Redis.from_url(settings.redis_url), store_from_settings(settings))
    job_id = jobs.create("classify", source="tests", model_version="v", classes=["happy", "sad"],
                         name="pace")["id"]
    jobs.set_status(job_id, JobStatus.RUNNING)
    jobs.update(job_id, started_at=time.time() - 100, total=1000, done=250)
    tab.goto(f"{server}/#/jobs/{job_id}")
    tab.wait_for_selector("#job-pace")
    pace = tab.text_content("#job-pace")
    assert pace.startswith("2.5 images/s") and pace.endswith("left") and "5m" in pace
    jobs.set_status(job_id, JobStatus.CANCELLED)


def test_a_late_answer_to_an_older_job_filter_never_replaces_the_newer(tab, server, settings,
                                                                       campaign_job):
    late = finished_job(settings, rows({"a": (1, 1)}), name="late answer", tags=["late"])
    tab.goto(f"{server}/#/")
    tab.wait_for_selector(f"tr[data-job='{late}']")
    # the answer for the tag filter is held back until the name filter's answer has drawn
    held = []
    tab.route("**/v1/jobs?*", lambda route: held.append(route)
              if "tag=late" in route.request.url else route.continue_())
    tab.fill("#filter-tag", "late")
    tab.click("#job-filters button[type=submit]")
    tab.fill("#filter-tag", "")
    tab.fill("#filter-name", "spring tv")
    tab.click("#job-filters button[type=submit]")
    shown = "[...document.querySelectorAll('#jobs-table tr[data-job]')].map(r => r.dataset.job).join()"
    wait_for_js(tab, f"{shown} === '{campaign_job}'")
    assert len(held) == 1
    with tab.expect_response(lambda r: "tag=late" in r.url):
        held[0].continue_()
    tab.wait_for_load_state("networkidle")
    assert tab.evaluate(shown) == campaign_job  # the older filter's late answer drew nothing
