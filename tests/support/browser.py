"""A real browser for the console's tests: Playwright (the Python package) driving Debian's Chromium, headless.

Playwright's own browser downloads are never used: ``CHROMIUM`` (``/usr/bin/chromium``, installed by
``.ci/run`` with apt when missing; ``PERSEUS_TEST_CHROMIUM`` overrides it) is launched through
``executable_path``. Every test that takes the ``page`` fixture leaves a screenshot of how the page looked at
its end in ``SCREENSHOTS`` (``artifacts/screenshots/``, gitignored, kept by CI), named after the test, with
``-FAILED`` added when the test failed.

Import the fixtures into a test module by their function names (``page_fixture`` is the ``page`` fixture):
``from tests.support.browser import browser_fixture, context_fixture, page_fixture, playwright_fixture``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PERSEUS_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
ACTION_TIMEOUT_MS = 15_000  # every Playwright action and wait of a page, unless a call passes its own
VIEWPORT = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}

try:  # the dev extra installs it; without it the browser tests skip rather than fail to import
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if sync_playwright is None:
        return "the playwright package is not installed (make venv)"
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def screenshot_path(name: str) -> Path:
    """Where a screenshot called ``name`` goes (the folder is made on demand)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"


@pytest.fixture(scope="module", name="playwright")
def playwright_fixture() -> Iterator[Playwright]:
    if why := chromium_missing():
        pytest.skip(why)
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module", name="browser")
def browser_fixture(playwright: Playwright) -> Iterator[Browser]:
    """One headless Chromium per module (each xdist worker runs its own)."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        timeout=30_000,
        # /dev/shm is small in containers; no sandbox as root (CI runs as root)
        args=["--disable-dev-shm-usage", "--no-sandbox", "--disable-gpu"],
    )
    yield browser
    browser.close()


def new_context(browser: Browser, **options: object) -> BrowserContext:
    """A fresh context (its own sessionStorage, cookies, cache) with the tests' timeouts."""
    context = browser.new_context(**{"viewport": VIEWPORT, **options})  # type: ignore[arg-type]
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    return context


@pytest.fixture(name="context")
def context_fixture(browser: Browser) -> Iterator[BrowserContext]:
    context = new_context(browser)
    yield context
    context.close()


@pytest.fixture(name="page")
def page_fixture(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page of a fresh context; its console errors are printed with a failure's output, and a screenshot of
    it is written at the end of the test (``<test>.png``, or ``<test>-FAILED.png``)."""
    page = context.new_page()
    page.on("console", lambda message: print(f"[browser {message.type}] {message.text}"))
    page.on("pageerror", lambda error: print(f"[browser pageerror] {error}"))
    failed_before = request.session.testsfailed
    yield page
    # the call phase's report is logged before teardown: a failure has been counted by now
    failed = request.session.testsfailed > failed_before
    name = request.node.name + ("-FAILED" if failed else "")
    try:
        page.screenshot(path=screenshot_path(name), full_page=True, timeout=10_000)
    except Exception as error:  # a crashed or closed page: the test's own failure says more
        print(f"screenshot {name} not taken: {error}")
