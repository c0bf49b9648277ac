"""The dashboard's scripts: ES modules served as JavaScript under a strict CSP, importing only
each other, and taking the server's vocabulary (statuses, job types, priorities, promote
policies, the gallery's special filters) from /openapi.json instead of repeating it; in
headless Chromium, the labels it shows follow the document the API serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api import create_app
from api.openapi import document
from tests.browser import wait_for_js
from tests.servers import serving

STATIC = Path(__file__).resolve().parent.parent / "api" / "static"
STRING = re.compile(r"""(["'`])((?:\\.|(?!\1).)*)\1""")  # a JS string literal, on one line
ARRAY = re.compile(r"\[([^\[\]]*)\]")
IMPORT = re.compile(r"""^import\s+(?:\{[^}]*\}\s+from\s+)?["']([^"']+)["'];""", re.M)


@pytest.fixture(scope="module")
def app(settings):
    """The real app on the tests' Redis and S3 store."""
    return create_app(settings)


@pytest.fixture(scope="module")
def vocabulary(app) -> dict[str, list[str]]:
    """The server's enums, as /openapi.json carries them."""
    doc = app.test_client().get("/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    label = next(p for p in doc["paths"]["/ui/api/jobs/{job_id}/gallery"]["get"]["parameters"]
                 if p["name"] == "label")
    return {"statuses": schemas["Job"]["properties"]["status"]["enum"],
            "finished": schemas["FinishedStatus"]["enum"],
            "types": schemas["Job"]["properties"]["type"]["enum"],
            "priorities": schemas["Job"]["properties"]["priority"]["enum"],
            "promote": schemas["TrainRequest"]["properties"]["promote"]["enum"],
            "labels": [s["const"] for s in label["schema"]["anyOf"] if "const" in s]}


def scripts() -> dict[str, str]:
    """Every script of the dashboard, comments dropped (prose may name a status)."""
    out = {}
    for path in sorted(STATIC.glob("*.js")):
        text = re.sub(r"(?m)^\s*//.*$|\s//\s.*$", "", path.read_text())
        out[path.name] = text
    return out


def hard_coded(text: str, vocabulary: dict[str, list[str]]) -> list[str]:
    """What a script repeats of the server's enums: a status, job type or special label as a
    string literal, or an array literal listing two or more values of any enum."""
    found = []
    singles = set(vocabulary["statuses"] + vocabulary["types"] + vocabulary["labels"])
    found += [s for _, s in STRING.findall(text) if s in singles]
    for body in ARRAY.findall(text):
        strings = {s for _, s in STRING.findall(body)}
        if any(len(strings & set(values)) > 1 for values in vocabulary.values()):
            found.append(f"[{body}]")
    return found


def test_the_check_finds_the_enums_the_old_global_script_repeated(vocabulary):
    # Given the old one-file script's constants (as it had them before the modules)
    old = ('const FINISHED = ["succeeded", "failed", "cancelled"];\n'
           'const ERRORS = "!errors";\n'
           'h("select", {}, ["normal", "high", "low"].map(option));\n'
           'const promote = ["never", "if_better", "always", "force"];\n'
           'if (job.type === "train") draw();\n')
    # Then the check names each of them
    assert hard_coded(old, vocabulary) == [
        "succeeded", "failed", "cancelled", "!errors", "train",
        '["succeeded", "failed", "cancelled"]', '["normal", "high", "low"]',
        '["never", "if_better", "always", "force"]']


def test_no_script_repeats_a_server_enum(vocabulary):
    # Given the document's enums (they are there to be read)
    assert vocabulary["finished"] and set(vocabulary["finished"]) < set(vocabulary["statuses"])
    assert len(vocabulary["labels"]) == 2
    # Then no script of the dashboard writes one of them out
    repeated = {name: found for name, text in scripts().items()
                if (found := hard_coded(text, vocabulary))}
    assert repeated == {}


def test_the_scripts_are_es_modules_served_as_javascript_under_a_strict_csp(app):
    client = app.test_client()
    page = client.get("/")
    html = page.get_data(as_text=True)
    # the page loads one module, and no classic script (no inline one either)
    assert re.findall(r"<script[^>]*>", html) == [
        '<script type="module" src="/ui/static/app.js">']
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe" not in csp.split("script-src")[1].split(";")[0]
    # every module imports only modules beside it, each served as JavaScript (nosniff is on)
    for name, text in scripts().items():
        resp = client.get(f"/ui/static/{name}")
        assert resp.status_code == 200 and resp.mimetype == "text/javascript", name
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        for target in IMPORT.findall(text):
            assert target.startswith("./") and (STATIC / target[2:]).is_file(), (name, target)
        assert "window.charts" not in text and "window.chartkit" not in text  # no globals left
    # and every module is reached from app.js (none left over from the split)
    reached, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += [t[2:] for t in IMPORT.findall(scripts()[name])]
    assert reached == set(scripts())


def test_the_labels_shown_follow_the_document_the_api_serves(app, browser):
    # Given the app serving a document with one more status and its priorities reordered
    with app.app_context():
        doc = document()
    job = doc["components"]["schemas"]["Job"]["properties"]
    job["status"]["enum"] = [*job["status"]["enum"], "paused"]
    job["priority"] = {**job["priority"], "enum": sorted(job["priority"]["enum"]),
                       "default": "low"}
    app.extensions["facesense_openapi"] = doc  # what GET /openapi.json answers
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        with serving(app) as url:
            # When the jobs page is opened
            tab.goto(url + "/")
            tab.wait_for_selector("#filter-status option[value=paused]", state="attached")
            # Then its status filter and priority choice are the document's, in its order
            options = "sel => [...document.querySelectorAll(sel + ' option')].map(o => o.value)"
            assert tab.evaluate(f"({options})('#filter-status')") == ["", *job["status"]["enum"]]
            assert tab.evaluate(f"({options})('#priority')") == ["low", "high", "normal"]
            # and a document without the finished statuses stops the page with a notice saying
            # so, rather than a page that never stops polling
            del doc["components"]["schemas"]["FinishedStatus"]
            tab.reload()
            wait_for_js(tab, "!document.getElementById('notice').hidden")
            assert tab.text_content("#notice") == "/openapi.json lacks the FinishedStatus schema"
    finally:
        context.close()
        app.extensions.pop("facesense_openapi", None)
