"""The web dashboard in headless Chromium (Debian's, driven by Playwright) against the real API,
Redis, S3 store and Celery worker; plus its JSON routes and the worker's thumbnails."""

from __future__ import annotations

import io
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import redis
import requests
from PIL import Image

from api import create_app
from facesense.outputs.gallery import ThumbCache
from facesense.outputs.pages import STRIDE, read_rows
from facesense.outputs.results import write_results
from facesense.outputs.thumbnails import ThumbnailWriter, sampled, thumb_key, writer_for
from facesense.registry import Registry
from facesense.state.records import JobRecords
from facesense.state.status import JobStatus, new_job_id
from facesense.storage import store_from_settings
from facesense.storage.layout import job_key, url_list
from facesense.synthetic import draw_face, jpeg, make_dataset
from facesense.trainparams import TrainParams
from tests.browser import wait_for_js
from tests.conftest import wait_for_job
from tests.imagegen import encode, make_image
from tests.servers import serving

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parent.parent / "docs"
UPDATE_DOCS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
# Each epoch costs seconds (AdamW over AlexNet's 57M weights, a ~650 MB checkpoint): 2 epochs
# on 16 faces draw the curves; the committed screenshot gets a run that learns something.
EPOCHS, FACES, SIDE, BATCH = (12, 120, 112, 32) if UPDATE_DOCS else (2, 8, 64, 12)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Where screenshots go (pytest's tmp dir; copies are committed under docs/)."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def campaign(base_dir):
    """12 generated faces in 2 ad variants (7 + 5) and one corrupt file in the first."""
    root = base_dir / "dashboard-campaign"
    rng = random.Random(7)
    for group, n in (("variant_a", 7), ("variant_b", 5)):
        (root / group).mkdir(parents=True)
        for i in range(n):
            face = draw_face(rng, happy=i % 3 != 0, size=rng.randrange(160, 480))
            (root / group / f"shot_{i:02d}.jpg").write_bytes(jpeg(face, rng))
    (root / "variant_a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def screenshot(page, artifacts, name: str, docs: bool = True) -> None:
    """Save a full-page screenshot as a test artifact; with UPDATE_SCREENSHOTS=1, also refresh
    its committed copy under docs/ (opt-in, so a test run leaves the work tree clean)."""
    path = artifacts / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a real page, not a blank one
    if docs and UPDATE_DOCS:
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / name)


def cards(page) -> list[dict]:
    """The gallery's cards as data."""
    return page.eval_on_selector_all("#gallery figure", """els => els.map(e => ({
        image: e.querySelector('.name').textContent, label: e.dataset.label,
        group: e.dataset.group, error: e.querySelector('.reason')?.textContent || null,
        thumb: e.querySelector('img') ? e.querySelector('img').naturalWidth : null}))""")


def test_submit_a_folder_watch_it_finish_and_filter_the_gallery(page, server, worker, campaign,
                                                                 client, artifacts, settings):
    # Given the dashboard, when a folder is submitted through its form
    page.goto(server + "/")
    page.fill("#source", str(campaign))
    page.select_option("#priority", "high")
    page.click("#submit-source-button")
    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    assert client.get(f"/v1/jobs/{job_id}").get_json()["priority"] == "high"

    # then the progress bar fills to 13 of 13 and the job succeeds
    page.wait_for_selector("#job-header [data-status=succeeded]", timeout=90_000)
    bar = page.locator("#job-header .progress")
    assert (bar.get_attribute("data-done"), bar.get_attribute("data-total")) == ("13", "13")

    # one card per image, each scored card with its thumbnail, labels as the API has them
    wait_for_js(page, "document.querySelectorAll('#gallery figure').length === 13")
    wait_for_js(page, "[...document.querySelectorAll('#gallery img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    rows = client.get(f"/v1/jobs/{job_id}/results?limit=100").get_json()["rows"]
    shown = cards(page)
    assert sorted(c["image"] for c in shown) == sorted(r["image"] for r in rows)
    by_image = {r["image"]: r for r in rows}
    for card in shown:
        row = by_image[card["image"]]
        assert card["label"] == (row["label"] or "") and card["group"] == row["group"]
        if row["error"]:
            assert card["error"] == row["error"] and card["thumb"] is None
        else:
            assert max(card["thumb"], 1) <= 128 and card["thumb"] > 0
    # made on demand from the folder: the store keeps no thumbnail files for the job
    assert list(store_from_settings(settings).list(job_key(job_id, "thumbs/"))) == []

    # the share chart has one bar segment per group and label, sized as the summary says
    summary = client.get(f"/v1/jobs/{job_id}").get_json()["summary"]
    segments = page.eval_on_selector_all(
        "svg[data-chart=shares] rect[data-group]",
        "els => els.map(e => [e.dataset.group, e.dataset.label, Number(e.dataset.share)])")
    assert sorted(segments) == sorted(
        [g, c, summary["groups"][g]["labels"][c]["share"]]
        for g in ("variant_a", "variant_b") for c in ("happy", "sad"))

    # filtering by label shows exactly that label's images; by group, that group's
    for label in ("happy", "sad"):
        count = summary["overall"]["labels"][label]["count"]
        page.select_option("#filter-label", label)
        page.wait_for_selector(f"#gallery-range[data-label={label}][data-shown='{count}']",
                               state="attached")
        assert [c["label"] for c in cards(page)] == [label] * count
    page.select_option("#filter-label", "")
    page.select_option("#filter-group", "variant_b")
    page.wait_for_selector("#gallery-range[data-label=''][data-group=variant_b][data-shown='5']",
                           state="attached")
    assert [c["group"] for c in cards(page)] == ["variant_b"] * 5

    # the filters live in the URL: a reload (or a shared link) shows the same gallery
    page.select_option("#page-size", "24")
    page.wait_for_url(f"**/#/jobs/{job_id}?group=variant_b&limit=24")
    page.reload()
    page.wait_for_selector("#gallery-range[data-label=''][data-group=variant_b][data-shown='5']",
                           state="attached")
    assert (page.input_value("#filter-group"), page.input_value("#page-size")) == ("variant_b",
                                                                                   "24")

    # the corrupt file is listed with its reason
    errors = page.locator("#errors tbody tr")
    assert errors.count() == 1
    assert errors.first.locator("td").first.text_content() == "variant_a/broken.jpg"
    assert by_image["variant_a/broken.jpg"]["error"] in errors.first.text_content()

    page.select_option("#filter-group", "*")
    page.wait_for_selector("#gallery-range[data-group='*'][data-shown='13']", state="attached")
    wait_for_js(page, "[...document.querySelectorAll('#gallery img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, artifacts, "scoring-job.png")

    # and the jobs list shows it done, its bar full
    page.goto(server + "/#/")
    row = page.locator(f"#jobs-table tr[data-job='{job_id}']")
    row.locator("[data-status=succeeded]").wait_for()
    assert row.locator(".progress").get_attribute("data-done") == "13"
    screenshot(page, artifacts, "jobs.png", docs=False)


def test_a_slow_answer_to_an_older_filter_never_replaces_the_newer_one(page, server, worker,
                                                                      campaign, client):
    # Given a finished job's page
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(campaign)})
    job_id = resp.get_json()["id"]
    assert wait_for_job(client, job_id)["status"] == "succeeded"
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("#gallery-range[data-shown='13']", state="attached")
    summary = client.get(f"/v1/jobs/{job_id}").get_json()["summary"]
    # a label variant_b has, and that the other group has too (so the two answers differ)
    label = max(("happy", "sad"), key=lambda c: summary["groups"]["variant_b"]["labels"][c]["count"])
    count = summary["groups"]["variant_b"]["labels"][label]["count"]
    assert 0 < count < summary["overall"]["labels"][label]["count"]

    # When the answer for "<label>, all groups" comes after the one for "<label>, variant_b"
    held = []
    page.route("**/ui/api/jobs/*/gallery?*", lambda route: held.append(route)
               if "group=" not in route.request.url else route.continue_())
    page.select_option("#filter-label", label)
    page.select_option("#filter-group", "variant_b")
    newer = f"#gallery-range[data-label={label}][data-group=variant_b][data-shown='{count}']"
    page.wait_for_selector(newer, state="attached")
    assert len(held) == 1
    with page.expect_response(lambda r: "/gallery?" in r.url and "group=" not in r.url):
        held[0].continue_()
    page.wait_for_load_state("networkidle")  # the late answer and its thumbnails are in
    # Then the gallery still shows what the filters say, not the late answer's cards
    page.wait_for_selector(newer, state="attached")
    assert [(c["label"], c["group"]) for c in cards(page)] == [(label, "variant_b")] * count


def test_a_folder_uploaded_from_the_browser_keeps_its_sub_folders_as_groups(page, server, worker,
                                                                           base_dir, unique):
    chosen = base_dir / f"upload-{unique}" / "spring"  # the folder's own name is not a group
    rng = random.Random(3)
    for group in ("shop_a", "shop_b"):
        (chosen / group).mkdir(parents=True)
        (chosen / group / "face.jpg").write_bytes(jpeg(draw_face(rng, True, size=200), rng))
    page.goto(server + "/")
    page.set_input_files("#folder", str(chosen))
    page.click("#submit-upload button[type=submit]")
    page.wait_for_url("**/#/jobs/*")
    page.wait_for_selector("#job-header [data-status=succeeded]", timeout=60_000)
    page.wait_for_selector("#gallery-range[data-shown='2']", state="attached")
    assert sorted((c["group"], c["image"]) for c in cards(page)) == [
        ("shop_a", "shop_a/face.jpg"), ("shop_b", "shop_b/face.jpg")]


@pytest.fixture(scope="module")
def trained(settings, base_dir, model_version):
    """A real training job (2 epochs, 64 px, 16 faces) run to the end by worker.training's job
    function in this process (no second worker to start). Its store is a local folder in RAM
    where there is one: each epoch's checkpoint is ~650 MB, ~10 s to the test S3 server and
    ~4.5 s to disk, ~1.4 s to tmpfs. Yields the finished record, the URL of an app on that
    store (same Redis) and its settings."""
    from worker.context import build_context
    from worker.model_cache import add_models
    from worker.training import run_training

    root = base_dir / "dashboard-faces"
    make_dataset(root, per_class=FACES, seed=11)
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="facesense-dashboard-",
                                   dir=shm if shm.is_dir() else base_dir))
    local = settings.replace(store=str(folder))
    try:
        ctx = add_models(build_context(local, lambda name, args: None))
        params = TrainParams.parse({"epochs": EPOCHS, "batch_size": BATCH, "image_size": SIDE,
                                    "patience": 0, "min_steps": 0, "val_split": 0.34})
        record = ctx.jobs.create("train", dataset=str(root), params=params.to_dict(),
                                 promote="never")
        run_training(ctx, record["id"])
        with serving(create_app(local)) as url:
            yield ctx.jobs.get(record["id"]), url, local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_manifest_is_scored_from_the_form_by_path_and_uploaded(page, server, worker, client,
                                                                 base_dir, unique):
    # Given four faces in one folder and a manifest naming their variant and participant
    root = base_dir / f"manifest-ui-{unique}"
    root.mkdir()
    rng = random.Random(5)
    lines = ["image,variant,participant"]
    for i in range(4):
        (root / f"f{i}.jpg").write_bytes(jpeg(draw_face(rng, True, size=160), rng))
        lines.append(f"f{i}.jpg,{'AB'[i % 2]},p{i}")
    (root / "study.csv").write_text("\n".join(lines) + "\n")
    absolute = ["image,variant"] + [f"{root / f'f{i}.jpg'},{'AB'[i % 2]}" for i in range(4)]
    (root / "upload.csv").write_text("\n".join(absolute) + "\n")

    def scored(fill) -> dict:
        page.goto(server + "/")
        fill()
        page.fill("#group-by", "variant")
        page.click("#submit-manifest-button")
        page.wait_for_url("**/#/jobs/*")
        page.wait_for_selector("#job-header [data-status=succeeded]", timeout=60_000)
        return client.get(f"/v1/jobs/{page.url.rsplit('/', 1)[1]}").get_json()

    # When it is submitted by its path on the server, Then the summary groups by its column
    # and the rows carry the other columns
    by_path = scored(lambda: page.fill("#manifest", str(root / "study.csv")))
    assert sorted(by_path["summary"]["groups"]) == ["A", "B"]
    rows = client.get(f"/v1/jobs/{by_path['id']}/results").get_json()["rows"]
    assert sorted(r["meta"]["participant"] for r in rows) == ["p0", "p1", "p2", "p3"]
    # and uploaded from the browser, the same
    uploaded = scored(lambda: page.set_input_files("#manifest-file", str(root / "upload.csv")))
    assert sorted(uploaded["summary"]["groups"]) == ["A", "B"]
    assert uploaded["progress"]["done"] == 4


def test_a_training_job_page_shows_its_curves_and_metrics(page, trained, artifacts):
    job, server, _ = trained
    assert job["status"] == "succeeded", job
    page.goto(f"{server}/#/jobs/{job['id']}")

    # Both charts draw every epoch of both series.
    for chart, series in (("loss", ("train loss", "validation loss")),
                          ("accuracy", ("train accuracy", "validation accuracy"))):
        for name in series:
            # attached, not visible: a flat line (accuracy stuck at 0.5) has no height
            page.wait_for_selector(f"svg[data-chart={chart}] path[data-series='{name}']",
                                   state="attached")
            dots = page.locator(f"svg[data-chart={chart}] circle[data-series='{name}']")
            assert dots.count() == EPOCHS, (chart, name)
    # The confusion matrix holds every validation image; one metrics row per class.
    page.wait_for_selector("#confusion")
    counted = page.eval_on_selector_all("#confusion td", "els => els.map(e => +e.dataset.count)")
    matrix = job["metrics"]["confusion_matrix"]
    assert counted == [n for row in matrix for n in row] and sum(counted) > 0
    assert page.locator("#per-class tbody tr").count() == 2
    screenshot(page, artifacts, "training-job.png")


def registered_as(local, job: dict, name: str, beats_chance: bool) -> str:
    """The trained version's weights registered again under name with a chance record that
    does or does not beat chance (a 2-epoch run's own verdict is whatever its seed gives)."""
    registry = Registry(store_from_settings(local))
    manifest = registry.manifest(job["model_version"])
    chance = {"baseline": 0.5, "correct": 6 if beats_chance else 3, "images": 6, "alpha": 0.05,
              "p_value": 0.0156 if beats_chance else 0.656, "beats_chance": beats_chance}
    kept = {k: v for k, v in manifest.items() if k not in ("version", "weights_sha256")}
    return registry.register(registry.weights(manifest), {**kept, "chance": chance},
                             version=name)["version"]


def test_a_version_no_better_than_chance_is_promoted_only_when_forced(page, trained, unique):
    _, server, local = trained
    version = registered_as(local, trained[0], f"coin-{unique}", beats_chance=False)
    page.goto(server + "/#/models")
    row = page.locator(f"#models-table tr[data-version='{version}']")
    assert "no: 3 of 6 right" in row.text_content()
    row.locator("input[aria-label=alias]").fill(f"weak-{unique}")
    row.locator("button.promote").click()
    page.wait_for_selector("#notice:not([hidden])")
    assert "does not beat chance" in page.text_content("#notice")
    assert Registry(store_from_settings(local)).alias(f"weak-{unique}") is None
    row.locator("input.force").check()
    row.locator("button.promote").click()
    page.wait_for_selector(f".alias[data-alias='weak-{unique}']")
    assert "forced" in page.locator(f".alias[data-alias='weak-{unique}'] tbody tr").first.text_content()
    assert Registry(store_from_settings(local)).alias(f"weak-{unique}")["history"][-1]["forced"]


def test_the_models_page_promotes_a_version_and_shows_the_move(page, trained, unique, artifacts):
    _, server, local = trained
    version = registered_as(local, trained[0], f"good-{unique}", beats_chance=True)
    page.goto(server + "/#/models")
    row = page.locator(f"#models-table tr[data-version='{version}']")
    assert "yes (p = 0.0156)" in row.text_content() and not row.locator("input.force").count()
    row.locator("input[aria-label=alias]").fill(f"dash-{unique}")
    row.locator("button.promote").click()
    page.wait_for_selector(f".alias[data-alias='dash-{unique}']")
    history = page.locator(f".alias[data-alias='dash-{unique}'] tbody tr")
    assert history.count() == 1 and version in history.first.text_content()
    screenshot(page, artifacts, "models.png", docs=False)
    registry = Registry(store_from_settings(local))
    assert registry.alias(f"dash-{unique}")["version"] == version


def test_a_pasted_api_key_is_sent_with_every_call(browser, settings, model_version, unique):
    from facesense.keys import hash_key, new_key

    key = new_key()
    keyed = create_app(settings.replace(admin_keys=f"dash{unique}:{hash_key(key)}"))
    folder = image_folder(settings, f"keyed-{unique}", 2, (96, 64))
    rows = fake_rows(2)
    job_id = finished_job(settings, rows, source=folder.as_uri())  # no owner: an admin key sees it
    context = browser.new_context()
    with serving(keyed) as url:
        tab = context.new_page()
        tab.goto(url + "/")  # the page itself is open; its first data call asks for a key
        tab.wait_for_selector("#notice:not([hidden])")
        assert "API key" in tab.text_content("#notice")
        tab.fill("#api-key", key)
        tab.click("#key-form button[type=submit]")
        tab.wait_for_selector("#jobs-table tbody tr")
        assert tab.evaluate("localStorage.getItem('facesense.apiKey')") == key
        # a thumbnail can't carry the header as an <img src>: it is fetched with it, as a blob
        tab.goto(f"{url}/#/jobs/{job_id}")
        wait_for_js(tab, "[...document.querySelectorAll('#gallery img')]"
                              ".some(i => i.src.startsWith('blob:') && i.naturalWidth === 96)")
    context.close()


# ---- the JSON routes and the thumbnails, without a browser -----------------------------------

def finished_job(settings, rows: list[dict], source: str = "tests", **fields) -> str:
    """A succeeded scoring job whose results are these rows (written as finalize would); its
    default source can't be read (like a URL list's)."""
    store = store_from_settings(settings)
    jobs = JobRecords(redis.Redis.from_url(settings.redis_url), store)
    record = jobs.create("classify", source=source, model_version="v", classes=["happy", "sad"],
                         **fields)
    summary = write_results(store, record["id"], rows, ["happy", "sad"],
                            faces=bool(fields.get("faces")))
    jobs.update(record["id"], total=len(rows), done=len(rows))
    jobs.set_status(record["id"], JobStatus.SUCCEEDED, summary=summary,
                    results={"results.jsonl": job_key(record["id"], "results.jsonl")})
    return record["id"]


def test_a_comparison_not_yet_significant_shows_the_images_per_group_it_needs(page, server,
                                                                               settings):
    # Given four groups: 12 of 20 happy, 9 of 20, 36 of 40, 18 of 40; ad_b and ad_d share 45 %
    rows = []
    for group, happy, sad in (("ad_a", 12, 8), ("ad_b", 9, 11), ("ad_c", 36, 4), ("ad_d", 18, 22)):
        rows += [{"image": f"{group}/{i}.jpg", "group": group,
                  "label": "happy" if i < happy else "sad", "confidence": 0.9,
                  "probs": {"happy": 0.9, "sad": 0.1} if i < happy else {"happy": 0.1, "sad": 0.9},
                  "error": None} for i in range(happy + sad)]
    job_id = finished_job(settings, rows)
    summary = requests.get(f"{server}/v1/jobs/{job_id}", timeout=10).json()["summary"]

    # When its page opens
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("#comparisons tbody tr")

    # Then every pair not significant shows the summary's figure, and a significant one nothing
    shown = page.eval_on_selector_all(
        "#comparisons tbody tr", "els => els.map(e => [e.dataset.label, e.dataset.a, e.dataset.b,"
        " e.dataset.needed, e.querySelector('td.needed').textContent])")
    expected = []
    for c in summary["comparisons"]:
        size = c["sample_size"]
        assert (size is None) is c["significant"]
        text = "" if size is None else (size["reason"] if size["per_group"] is None
                                        else f"{size['per_group']:,}")
        expected.append([c["label"], c["a"], c["b"],
                         "" if size is None else str(size["per_group"]).replace("None", "null"),
                         text])
    assert shown == expected
    numbers = [s for s in shown if s[3] not in ("", "null")]
    assert numbers and all(int(s[3]) > 20 for s in numbers)  # more than these groups have
    assert [s[4] for s in shown if s[1:3] == ["ad_b", "ad_d"]] == \
        ["no difference observed: no number of images can detect it"] * 2  # 45 % and 45 %
    assert "Images per group to detect" in page.text_content("#comparisons thead")
    note = page.text_content("#needed-note")
    assert "80% of the time" in note and "alpha 0.00833" in note  # 0.05 over 6 pairs


def fake_rows(n: int) -> list[dict]:
    rng, rows = random.Random(3), []
    for i in range(n):
        group = f"variant_{i % 3}"
        if i % 97 == 0:
            rows.append({"image": f"{group}/{i}.jpg", "group": group, "label": None,
                         "confidence": None, "probs": None, "error": "not a readable image"})
            continue
        p = round(rng.random(), 6)
        label = "happy" if p >= 0.5 else "sad"
        rows.append({"image": f"{group}/{i}.jpg", "group": group, "label": label,
                     "confidence": max(p, 1 - p), "probs": {"happy": p, "sad": 1 - p},
                     "error": None})
    return rows


def test_the_scoring_page_shows_intervals_and_marks_significant_differences(page, server,
                                                                             settings):
    # Given a finished job whose groups differ: 30 of 40 happy, 10 of 40, 21 of 40 (+1 error)
    rows = []
    for group, happy, sad in (("ad_a", 30, 10), ("ad_b", 10, 30), ("ad_c", 21, 19)):
        for i in range(happy + sad):
            label, p = ("happy", 0.8) if i < happy else ("sad", 0.3)
            rows.append({"image": f"{group}/{i}.jpg", "group": group, "label": label,
                         "confidence": max(p, 1 - p), "probs": {"happy": p, "sad": 1 - p},
                         "error": None})
    rows.append({"image": "ad_c/bad.jpg", "group": "ad_c", "label": None, "confidence": None,
                 "probs": None, "error": "not a readable image"})
    job_id = finished_job(settings, rows)
    summary = requests.get(f"{server}/v1/jobs/{job_id}", timeout=10).json()["summary"]

    # When its page opens
    page.goto(f"{server}/#/jobs/{job_id}")
    page.wait_for_selector("#comparisons tbody tr")

    # Then each group and label has a dot at its share and an error bar over its interval
    bars = page.eval_on_selector_all(
        "svg[data-chart=intervals] line.ci",
        "els => els.map(e => [e.dataset.group, e.dataset.label, Number(e.dataset.low),"
        " Number(e.dataset.high)])")
    dots = page.eval_on_selector_all(
        "svg[data-chart=intervals] circle[data-share]",
        "els => els.map(e => [e.dataset.group, e.dataset.label, Number(e.dataset.share)])")
    cells = [(g, c, v) for g, t in summary["groups"].items() for c, v in t["labels"].items()]
    assert sorted(bars) == sorted([g, c, *v["ci95"]] for g, c, v in cells)
    assert sorted(dots) == sorted([g, c, v["share"]] for g, c, v in cells)
    assert "95% CI" in page.text_content("table.summary")

    # and the comparison table has every pair, the significant ones marked
    shown = page.eval_on_selector_all(
        "#comparisons tbody tr",
        "els => els.map(e => [e.dataset.label, e.dataset.a, e.dataset.b,"
        " e.dataset.significant === 'true', e.classList.contains('significant'),"
        " e.children[8].textContent])")
    assert [s[:4] for s in shown] == [[c["label"], c["a"], c["b"], c["significant"]]
                                      for c in summary["comparisons"]]
    assert all(s[3] == s[4] and (s[5] == "✱ yes") == s[3] for s in shown)
    a_vs_b = [s for s in shown if s[1:3] == ["ad_a", "ad_b"]]
    assert a_vs_b and all(s[3] for s in a_vs_b)  # 75 % vs 25 %: p far below 0.05
    significant = sum(c["significant"] for c in summary["comparisons"])
    assert page.text_content("#comparisons-note").startswith(f"{significant} of 6 comparisons")

    # and summary.csv downloads as the API serves it
    with page.expect_download() as download:
        page.click("#download-summary")
    saved = Path(download.value.path()).read_bytes()
    assert saved == requests.get(f"{server}/v1/jobs/{job_id}/summary.csv", timeout=10).content
    assert saved.decode().splitlines()[0] == "group,label,count,share,ci95_low,ci95_high"


class CountingStore:
    """The tests' real store, counting the bytes pages read from results.jsonl (so a test can
    bound a page's work instead of timing it on a loaded machine)."""

    def __init__(self, store):
        self.store, self.read = store, 0

    def get(self, key: str) -> bytes:
        return self.store.get(key)

    def open(self, key: str, start: int = 0):
        return _Counted(self.store.open(key, start=start), self)


class _Counted:
    def __init__(self, stream, counter: CountingStore):
        self.stream, self.counter = stream, counter

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.counter.read += len(data)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()


def test_gallery_pages_stay_fast_at_10000_images(client, settings):
    rows = fake_rows(10_000)
    job_id = finished_job(settings, rows)
    want = [r for r in rows if r["group"] == "variant_2" and r["label"] == "sad"]
    last = client.get(f"/ui/api/jobs/{job_id}/gallery?label=sad&group=variant_2"
                      f"&offset={len(want) - 10}&limit=48").get_json()
    assert last["total"] == len(want) and last["next_offset"] is None
    assert [r["image"] for r in last["rows"]] == [r["image"] for r in want[-10:]]
    # fast without a clock: a label's last page reads from its nearest indexed row (at most
    # STRIDE of its rows before the page) to the end, plus one read-ahead chunk, never the
    # 10,000 rows from the top
    store = CountingStore(store_from_settings(settings))
    sad = [r for r in rows if r["label"] == "sad"]
    page = read_rows(store, job_id, len(sad) - 10, 48, "sad")
    assert [row["image"] for _, row in page] == [r["image"] for r in sad[-10:]]
    lines = store.store.get(job_key(job_id, "results.jsonl")).splitlines(keepends=True)
    spanned = len(rows) - rows.index(sad[-10 - STRIDE])  # rows from the mark to the end
    bound = spanned * max(map(len, lines)) + (1 << 16)
    assert store.read <= bound < sum(map(len, lines)) / 3, (store.read, bound)
    first = client.get(f"/ui/api/jobs/{job_id}/gallery?limit=48").get_json()
    assert first["total"] == 10_000 and first["next_offset"] == 48
    # a source the API can't read again: only the workers' sample has pictures
    assert [r["thumb"] for r in first["rows"]] == [
        f"/ui/api/jobs/{job_id}/thumbs/{i}" if not r["error"] and sampled(r["image"]) else None
        for i, r in enumerate(rows[:48])]
    errors = client.get(f"/ui/api/jobs/{job_id}/gallery?label=!errors&limit=500").get_json()
    assert errors["total"] == len([r for r in rows if r["error"]]) == len(errors["rows"])
    assert all(r["error"] and r["thumb"] is None for r in errors["rows"])


def image_folder(settings, name: str, n: int, size=(64, 48)) -> Path:
    """n JPEGs named like fake_rows' images (variant_<i % 3>/<i>.jpg), under the allowed root."""
    root = Path(settings.allowed_roots[0]) / name
    rng = random.Random(len(name))
    for i in range(n):
        (root / f"variant_{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"variant_{i % 3}" / f"{i}.jpg").write_bytes(encode(make_image(rng, size), "JPEG"))
    return root


def test_a_thumbnail_is_made_from_its_own_jobs_source_and_row_only(client, settings, unique):
    # Given two finished jobs on two folders (row 0 of each failed)
    folder_a = image_folder(settings, f"thumbs-a-{unique}", 3, (200, 100))
    folder_b = image_folder(settings, f"thumbs-b-{unique}", 3, (50, 80))
    job_a = finished_job(settings, fake_rows(3), source=folder_a.as_uri())
    job_b = finished_job(settings, fake_rows(3), source=folder_b.as_uri())
    # When the gallery's URL for row 1 of job A is fetched, Then it is that image, shrunk
    url = client.get(f"/ui/api/jobs/{job_a}/gallery").get_json()["rows"][1]["thumb"]
    assert url == f"/ui/api/jobs/{job_a}/thumbs/1"
    resp = client.get(url)
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(resp.data)).size == (128, 64)  # long side 128, aspect kept
    assert Image.open(io.BytesIO(client.get(f"/ui/api/jobs/{job_b}/thumbs/1").data)).size == (
        50, 80)  # job B's row 1 is job B's own image
    # and nothing but a row of that job's results names an image
    for bad in (f"/ui/api/jobs/{job_a}/thumbs/0",               # the failed image: no picture
                f"/ui/api/jobs/{job_a}/thumbs/3",               # past the last row
                f"/ui/api/jobs/{job_a}/thumbs/-1",
                f"/ui/api/jobs/{job_a}/thumbs/..%2Fjob.json",   # not a row number
                f"/ui/api/jobs/{job_a}/thumbs/{thumb_key(job_a, 'x').rsplit('/', 1)[1]}",
                f"/ui/api/jobs/ffff{job_a[4:]}/thumbs/1"):      # no such job
        resp = client.get(bad)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"], bad
    assert client.get(f"/ui/api/jobs/{job_a}/gallery?limit=x").status_code == 400


def test_a_thumbnail_keeps_the_workers_guards_and_the_allowed_roots(client, settings, unique):
    # Given a job whose row 1 is now a picture over the pixel limit, row 2 not an image at all
    folder = image_folder(settings, f"thumbs-guard-{unique}", 3)
    (folder / "variant_1" / "1.jpg").write_bytes(encode(make_image(random.Random(1),
                                                                   (1000, 1000)), "JPEG"))
    (folder / "variant_2" / "2.jpg").write_bytes(b"\x89PNG\r\n not an image")
    small = create_app(settings.replace(max_image_pixels=500 * 500)).test_client()
    job_id = finished_job(settings, fake_rows(3), source=folder.as_uri())
    for index in (1, 2):  # Then no thumbnail, a 404 with the reason, and no 500
        resp = small.get(f"/ui/api/jobs/{job_id}/thumbs/{index}")
        assert resp.status_code == 404, resp.get_json()
    assert "too many pixels" in small.get(f"/ui/api/jobs/{job_id}/thumbs/1").get_json()[
        "error"]["message"]
    # Given a job whose recorded source is outside the allowed roots (e.g. a root removed since)
    outside = Path(tempfile.mkdtemp(prefix="facesense-outside-"))
    try:
        (outside / "variant_1").mkdir()
        (outside / "variant_1" / "1.jpg").write_bytes(encode(make_image(random.Random(2),
                                                                        (64, 48)), "JPEG"))
        job_id = finished_job(settings, fake_rows(3), source=outside.as_uri())
        # Then the API reads nothing there
        assert client.get(f"/ui/api/jobs/{job_id}/thumbs/1").status_code == 404
    finally:
        shutil.rmtree(outside)


def test_another_keys_job_has_no_thumbnails_for_it(settings, unique):
    from facesense.keys import hash_key, new_key

    mine, theirs = new_key(), new_key()
    keyed = create_app(settings.replace(api_keys=f"me{unique}:{hash_key(mine)},"
                                                 f"them{unique}:{hash_key(theirs)}")).test_client()
    folder = image_folder(settings, f"thumbs-owner-{unique}", 2)
    job_id = finished_job(settings, fake_rows(2), source=folder.as_uri(), owner=f"me{unique}")
    url = f"/ui/api/jobs/{job_id}/thumbs/1"
    assert keyed.get(url, headers={"Authorization": f"Bearer {mine}"}).status_code == 200
    resp = keyed.get(url, headers={"Authorization": f"Bearer {theirs}"})
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "job_not_found"


def test_thumbnails_stay_within_the_caches_byte_bound(settings, unique):
    # Given an API whose thumbnail cache holds 20 KB, and a job of 60 images
    app = create_app(settings.replace(thumb_cache_bytes=20_000))
    folder = image_folder(settings, f"thumbs-cache-{unique}", 60, (300, 200))
    job_id = finished_job(settings, fake_rows(60), source=folder.as_uri())
    client = app.test_client()
    # When every thumbnail is fetched, twice
    sizes = [len(client.get(f"/ui/api/jobs/{job_id}/thumbs/{i}").data) for i in range(1, 60)] * 2
    # Then they were all served, yet the cache never held more than its bound (and the store
    # holds none of them)
    cache = app.extensions["facesense.thumbs"].cache
    assert min(sizes) > 1000 and 0 < cache.size <= 20_000 < sum(sizes) // 2
    assert list(store_from_settings(settings).list(job_key(job_id, "thumbs/"))) == []


def test_the_cache_drops_the_least_recently_used_first():
    cache = ThumbCache(10)
    cache.put(("j", 0), b"aaaa")
    cache.put(("j", 1), b"bbbb")
    assert cache.get(("j", 0)) == b"aaaa"  # now the most recent
    cache.put(("j", 2), b"cccc")
    assert (cache.get(("j", 1)), cache.get(("j", 0)), cache.size) == (None, b"aaaa", 8)
    cache.put(("j", 3), b"x" * 11)  # bigger than the whole cache: not kept
    assert cache.get(("j", 3)) is None and cache.size == 8


def test_workers_store_thumbnails_only_for_a_url_lists_sample(settings):
    store = store_from_settings(settings)
    folder_job, url_job = new_job_id(), new_job_id()
    store.put(url_list(url_job), b"[]")
    assert writer_for(store, folder_job, 1) is None  # the API makes them from the source
    assert writer_for(store, url_job, 0) is None  # thumbnails off
    writer = writer_for(store, url_job, 1)
    keys = [f"example.com/https://example.com/{i}.jpg" for i in range(64)]
    for key in keys:
        writer.add(key, Image.new("RGB", (300, 200), (90, 120, 200)))
    writer.close()
    kept = [k for k in keys if store.exists(thumb_key(url_job, k))]
    assert kept == [k for k in keys if sampled(k)] and 0 < len(kept) <= 64 // 16 * 2


def test_thumbnails_are_small_jpegs_and_a_failing_store_never_fails_a_row(settings):
    import torch

    from runtime.network import build_alexnet
    from runtime.preprocess import spec_for
    from runtime.serving import LoadedModel
    from worker.inference import score

    rng = random.Random(5)
    images = {f"g/{i}.jpg": encode(make_image(rng, (900, 500)), "JPEG") for i in range(6)}
    images["g/bad.jpg"] = b"garbage"
    torch.manual_seed(0)
    loaded = LoadedModel("v", ["happy", "sad"], spec_for(64), build_alexnet(2).eval(),
                         torch.device("cpu"), "fp32")

    def run(thumbs):
        return list(score(list(images), loaded, lambda k, _limit: images[k], batch_size=4,
                          threads=2, max_pixels=10**8, max_bytes=1 << 20, thumbs=thumbs))

    store = store_from_settings(settings)
    job_id = new_job_id()
    writer = ThumbnailWriter(store, job_id)
    plain = run(None)
    assert run(writer) == plain  # thumbnails change no row
    assert (writer.written, writer.failed) == (6, 0)
    thumb = Image.open(io.BytesIO(store.get(thumb_key(job_id, "g/0.jpg"))))
    assert thumb.format == "JPEG" and thumb.size == (128, 71)  # long side 128, aspect kept
    assert not store.exists(thumb_key(job_id, "g/bad.jpg"))

    class Broken:
        def put(self, key, data):
            raise OSError("disk full")

    broken = ThumbnailWriter(Broken(), job_id)
    assert run(broken) == plain and (broken.written, broken.failed) == (0, 6)

    # The GPU decode path hands over a batch of model crops (N, size, size, 3) as one tensor.
    crops = ThumbnailWriter(store, job_id)
    crops.add_batch(["c/0.jpg", "c/1.jpg"], torch.full((2, 224, 224, 3), 200, dtype=torch.uint8))
    crops.close()
    assert (crops.written, crops.failed) == (2, 0)
    assert Image.open(io.BytesIO(store.get(thumb_key(job_id, "c/1.jpg")))).size == (128, 128)


def test_the_train_form_queues_a_training_job_with_its_params(page, server, base_dir, unique,
                                                              artifacts):
    root = base_dir / f"train-form-{unique}"
    make_dataset(root, per_class=3, seed=5)
    page.goto(server + "/")
    page.fill("#dataset", "/etc")  # outside the allowed roots: the API's reason is shown
    page.click("#submit-train-button")
    page.wait_for_selector("#train-message.error")
    assert "/etc" in page.text_content("#train-message")
    screenshot(page, artifacts, "jobs-page.png", docs=False)
    page.fill("#dataset", str(root))
    page.fill("#epochs", "3")
    page.fill("#image-size", "96")
    page.select_option("#promote", "if_better")
    page.click("#submit-train-button")
    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    # No worker consumes the training queue in these tests: the job stays queued.
    page.wait_for_selector("#job-header [data-status=queued]")
    record = requests.get(f"{server}/v1/jobs/{job_id}", timeout=10).json()
    assert (record["type"], record["promote"]) == ("train", "if_better")
    assert (record["params"]["epochs"], record["params"]["image_size"]) == (3, 96)
    assert record["dataset"] == root.resolve().as_uri()
    assert requests.post(f"{server}/v1/jobs/{job_id}/cancel", timeout=10).ok
