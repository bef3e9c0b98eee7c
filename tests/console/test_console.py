"""The console in real Chromium against a live stack on real PostgreSQL and Redis."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import sign_in
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.timeout(120)


def start_echo(page: Page, title: str) -> str:
    """Through the new-session page: the echo agent, a title; returns the session id from the URL."""
    page.click("nav a[href='#/new']")
    page.check("input[name=agent_type][value=custom]")
    page.select_option("#custom_agent", "echo")
    page.fill("#title", title)
    page.click("#new-session button[type=submit]")
    page.wait_for_selector("#chat")
    expect(page.locator("#agent-status .badge")).to_have_text("stable", timeout=30_000)
    return page.url.rsplit("/", 1)[1]


def send(page: Page, text: str) -> None:
    expect(page.locator("#send")).to_be_enabled(timeout=30_000)
    page.fill("#message", text)
    page.click("#send")


def test_sessions(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token(role="owner"))
    expect(page.locator("#sessions h1")).to_have_text("Sessions")
    # The console is served with a policy that forbids inline scripts and framing.
    answer = httpx.get(f"{stack.base_url}/console")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert httpx.get(f"{stack.base_url}/").headers["location"] == "/console"
    session_id = start_echo(page, "listed session")
    page.click("nav a[href='#/sessions']")
    row = page.locator(f"tr[data-session='{session_id}']")
    expect(row).to_contain_text("listed session")
    expect(row.locator(".badge")).to_have_text(re.compile("^(starting|running|stable)$"))


def test_chat(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token())
    start_echo(page, "chat")
    for text in ("first", "second", "third"):
        send(page, text)
        expect(page.locator(".message.agent").last).to_contain_text(f"echo: {text}", timeout=30_000)
    expect(page.locator(".message.user")).to_have_count(3)
