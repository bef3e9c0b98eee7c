"""Real Chromium (Debian's package, driven by Playwright for Python) against a live stack.

Playwright's own browser downloads are never used: the browser is the system's ``chromium``
(``AGENTAPI_CHROMIUM`` overrides the path). Each test saves a screenshot of its page in the test run's
temporary directory, or in ``AGENTAPI_CONSOLE_SCREENSHOTS`` when set: the README's come from
``AGENTAPI_CONSOLE_SCREENSHOTS=docs/console python3 -m pytest tests/console``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.fixtures.stack import Stack


def chromium_path() -> str:
    path = os.environ.get("AGENTAPI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("the browser tests need Debian's chromium package (.ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's own sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(
    browser: Browser, stack: Stack, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Page]:
    """A fresh browser context per test (no shared sessionStorage); alert() dialogs are recorded
    on ``page.dialogs`` and dismissed; the page is saved as a screenshot named after the test."""
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 1100, "height": 800})
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    opened.dialogs = dialogs  # type: ignore[attr-defined]
    try:
        yield opened
    finally:
        wanted = os.environ.get("AGENTAPI_CONSOLE_SCREENSHOTS")
        folder = Path(wanted) if wanted else tmp_path_factory.getbasetemp() / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        name = request.node.name.removeprefix("test_")
        try:
            opened.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        finally:
            context.close()


def sign_in(page: Page, token: str) -> None:
    """Through the sign-in form, as a user pasting a token would."""
    page.goto("/console")
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#sessions")
