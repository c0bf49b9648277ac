"""What the dashboard's browser tests share: Debian's headless Chromium, a tab, the live app.

tests/conftest.py imports the fixtures, so every test may ask for them; module-scoped ones are
one per test module, and a module's own `server` (another app) takes its place there.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from api import create_app
from tests.servers import serving

CHROMIUM = "/usr/bin/chromium"  # Debian's package: `apt-get install -y chromium` (make test does)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server(settings, model_version):
    """The real Flask app, on the tests' Redis and S3 store, as the worker sees them."""
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium; never downloaded by Playwright (`playwright install` is not used)."""
    if not shutil.which("chromium") and not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh tab (its own localStorage), 1280 px wide like a laptop screen."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


def wait_for_js(page, expression: str, timeout: float = 60) -> None:
    """Poll a page state from the test side (Playwright's wait_for_function evaluates strings
    inside the page, which the dashboard's Content-Security-Policy rightly forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for: {expression}"
        time.sleep(0.05)
