"""A real browser for the UI tests: Playwright's Python package driving Debian's `chromium`
(`.ci/run` installs it when missing; Playwright's own browser download is not used).

Screenshots go to `$CRISIS_TEST_OUTPUT/browser` (default `.test-output/browser` in the checkout),
kept after the run so a person can look at them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def screenshot_folder() -> Path:
    folder = Path(os.environ.get("CRISIS_TEST_OUTPUT") or ROOT / ".test-output") / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_path() -> str | None:
    found = next((path for path in CHROMIUM_CANDIDATES if Path(path).exists()), None)
    return found or shutil.which("chromium")


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator:
    """A headless Chromium page; the test is skipped, saying why, only when no browser is installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no browser: Playwright's Python package is not installed (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no browser: Debian's chromium is not installed (`apt-get install chromium`; .ci/run does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()
