"""A real browser for tests: Playwright for Python driving Debian's Chromium (/usr/bin/chromium).

`make test` installs both (apt-get install chromium, and playwright from the test extras);
Playwright's own browser download is never used.  When either is missing the test is
skipped, which under CI=true is a failure (tests/conftest.py).

    from tests.support.browser import page, screenshot  # noqa: F401 (the fixture)

    def test_list(page, inspector_url):
        page.goto(inspector_url)
        page.wait_for_selector("tr.exchange")
        screenshot(page, "inspector-list")

Playwright's sync API runs its own asyncio loop on a greenlet, so it must be used where no
asyncio loop is running (not inside a running reactor).  A test that serves from an
in-process reactor can run a whole `browser_page()` block in a thread of its own.
"""

import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Headless, and quiet: no first-run pages, no updates or sync calls to Google from the test.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
# Waits a page gets by default (milliseconds): long enough for a loaded CI machine.
TIMEOUT_MS = 15000
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; `make test` does it)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; `make test` does it)")
    return sync_playwright


@contextmanager
def browser_page(viewport=VIEWPORT):
    """A fresh Chromium page (its own profile, closed afterwards); console errors and
    uncaught exceptions of the page are collected in `page.errors`."""
    sync_playwright = _sync_playwright()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_context(viewport=viewport).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
            yield page
        finally:
            browser.close()


@pytest.fixture
def page():
    with browser_page() as opened:
        yield opened


def screenshot(page, name):
    """Save the whole page as artifacts/NAME.png at the checkout's root (git-ignored); its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path
