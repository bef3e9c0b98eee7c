"""The console in real Chromium against a live stack on real PostgreSQL and Redis.

Every page is driven as a user would (clicks, typing, reloads, a popup); what the API then holds is
checked over HTTP beside it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from api.dev import issue_console_login
from tests.console.conftest import sign_in
from tests.console.proxy import CuttableProxy
from tests.fakes.oauth_server import FakeAuthorizationServer
from tests.fixtures.mcp import start_mcp_server
from tests.fixtures.stack import Stack, stop

pytestmark = pytest.mark.timeout(120)

STACK_ENV = {"AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true", "AGENTAPI_MAX_SESSIONS_PER_USER": "10"}
SLOW_REPLY = "the quick brown fox jumps over the lazy dog " * 3


@pytest.fixture(scope="module", autouse=True)
def more_workers(stack: Stack) -> None:
    """Tool tests, the audit log and webhooks need their pools too."""
    stack.start_worker("tools", "audit", "default")


@pytest.fixture(autouse=True)
def end_live_sessions(stack: Stack) -> Iterator[None]:
    """Each live echo session holds a sessions-worker thread: end them after every test."""
    yield
    owner = stack.headers(role="owner")
    listed = httpx.get(f"{stack.base_url}/api/v1/sessions?limit=100", headers=owner, timeout=10).json()
    live = [s["id"] for s in listed["sessions"] if s["status"] not in ("ended", "failed")]
    for session_id in live:
        httpx.delete(f"{stack.base_url}/api/v1/sessions/{session_id}", headers=owner, timeout=10)
    deadline = time.monotonic() + 20
    while live and time.monotonic() < deadline:
        live = [
            session_id
            for session_id in live
            if httpx.get(f"{stack.base_url}/api/v1/sessions/{session_id}", headers=owner, timeout=10).json()[
                "status"
            ]
            not in ("ended", "failed")
        ]
        time.sleep(0.2)


@contextmanager
def mcp_server(mode: str, *options: str) -> Iterator[str]:
    """The test MCP server, given a minute to start: importing fastmcp alone takes seconds on a
    loaded machine."""
    proc, url = start_mcp_server(mode, *options, timeout=60)
    try:
        yield url
    finally:
        stop(proc)


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


def shown_messages(page: Page) -> list[tuple[str, str]]:
    return [
        (node.get_attribute("class").split()[1], node.locator("pre").inner_text())  # type: ignore[union-attr]
        for node in page.locator("#messages .message").all()
    ]


def stored_messages(stack: Stack, session_id: str) -> list[tuple[str, str]]:
    answer = httpx.get(f"{stack.base_url}/api/v1/sessions/{session_id}/messages", headers=stack.headers())
    return [(m["role"], m["content"]) for m in answer.json()["messages"]]


def test_sign_in_refuses_a_bad_token(page: Page, stack: Stack) -> None:
    page.goto("/console")
    page.fill("#token", "not-a-token")
    page.click("#signin button[type=submit]")
    expect(page.locator("#signin .error")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_dev_link_signs_in_once_and_leaves_no_token_behind(page: Page, stack: Stack) -> None:
    token = stack.token(role="owner")
    code = issue_console_login(stack.env["AGENTAPI_REDIS_URL"], stack.env["AGENTAPI_REDIS_PREFIX"], token)
    page.goto(f"/console#login={code}")
    page.wait_for_selector("#sessions")
    assert code not in page.url and token not in page.url
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    # The link is spent: a second visit (another tab, with no token of its own) is refused.
    other = page.context.browser.new_context(base_url=stack.base_url)  # type: ignore[union-attr]
    again = other.new_page()
    again.goto(f"/console#login={code}")
    expect(again.locator("#signin .error")).to_contain_text("used already or has expired")
    other.close()


def test_chat(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token())
    session_id = start_echo(page, "Three messages")
    for text in ("first", "second", "third"):
        send(page, text)
        expect(page.locator(".message.agent").last).to_contain_text(f"echo: {text}", timeout=30_000)
    expect(page.locator(".message.user")).to_have_count(3)
    expect(page.locator("#agent-status .badge")).to_have_text("stable", timeout=30_000)
    assert shown_messages(page) == stored_messages(stack, session_id)


def test_reload_mid_reply_resumes_without_gaps_or_duplicates(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token())
    session_id = start_echo(page, "Reloaded")
    send(page, "before the reload")
    expect(page.locator(".message.agent").last).to_contain_text("echo: before the reload", timeout=30_000)
    send(page, f"/slow 4 {SLOW_REPLY}")
    reply = page.locator(".message.agent").last
    expect(reply).to_contain_text("echo: the quick", timeout=30_000)
    # The send box says why it is disabled while the agent works.
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#send-reason")).to_contain_text("The agent is working")
    partial = reply.inner_text()
    assert SLOW_REPLY.strip() not in partial
    page.reload()
    expect(page.locator(".message.agent").last).to_contain_text(SLOW_REPLY.strip(), timeout=30_000)
    expect(page.locator("#agent-status .badge")).to_have_text("stable", timeout=30_000)
    shown = shown_messages(page)
    assert shown == stored_messages(stack, session_id)
    assert [text for _, text in shown].count("before the reload") == 1
    assert len({text for _, text in shown}) == len(shown)


def test_stop(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token())
    session_id = start_echo(page, "Stopped from the list")
    page.click("nav a[href='#/sessions']")
    row = page.locator(f"tr[data-session='{session_id}']")
    row.locator("button.stop").click()
    expect(row).to_contain_text("stopping")
    row.locator("a").click()
    expect(page.locator("#agent-status .badge")).to_have_text("ended", timeout=30_000)
    expect(page.locator("#agent-status .reason")).to_have_text("stopped")
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#send-reason")).to_have_text("The session has ended.")


def test_agent_markup_and_escapes_render_as_text(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token())
    start_echo(page, "<b>hostile</b> title")
    expect(page.locator("#chat h1")).to_have_text("<b>hostile</b> title")
    payload = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    send(page, payload)
    expect(page.locator(".message.agent").last).to_contain_text(f"echo: {payload}", timeout=30_000)
    expect(page.locator(".message.user pre")).to_have_text(payload)
    assert page.locator("#messages img, #messages script, #chat h1 b").count() == 0
    page.wait_for_timeout(300)  # an onerror would have fired by now
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_raw_keys_and_upload(page: Page, stack: Stack, tmp_path: Path) -> None:
    sign_in(page, stack.token())
    session_id = start_echo(page, "Keys and files")
    page.click("#raw-keys button:text-is('Ctrl-C')")
    expect(page.locator(".message.agent").last).to_contain_text("^C interrupted", timeout=30_000)
    notes = tmp_path / "notes.txt"
    notes.write_text("uploaded through the console\n")
    page.set_input_files("#upload-file", str(notes))
    page.click("#upload button[type=submit]")
    expect(page.locator("#uploaded")).to_contain_text("uploads/notes.txt", timeout=30_000)
    path = page.locator("#uploaded").inner_text().removeprefix("uploaded to ")
    send(page, f"/cat {path}")
    expect(page.locator(".message.agent").last).to_contain_text(
        "uploaded through the console", timeout=30_000
    )
    expect(page.locator("#agent-status .badge")).to_have_text("stable", timeout=30_000)
    assert shown_messages(page) == stored_messages(stack, session_id)


def test_new_session_picker_says_what_agents_need(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token())
    page.click("nav a[href='#/new']")
    claude = page.locator("#new-session label", has=page.locator("input[value=claude]"))
    expect(claude).to_contain_text("needs AGENTAPI_ANTHROPIC_API_KEY")
    expect(claude.locator("input")).to_be_disabled()
    expect(page.locator("input[value=aider]")).to_be_disabled()
    expect(page.locator("#new-session label", has=page.locator("input[value=aider]"))).to_contain_text(
        "not installed here"
    )
    expect(page.locator("input[value=custom]")).to_be_enabled()


def test_mcp_errors_show_beside_the_field(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token())
    page.click("nav a[href='#/mcp']")
    page.fill("#mcp-name", "metadata")
    page.fill("#mcp-endpoint", "https://169.254.169.254/mcp")
    page.click("#mcp-add button[type=submit]")
    error = page.locator("#mcp-endpoint + .field-error")
    expect(error).to_be_visible()
    assert error.get_attribute("data-field") == "endpoint_url"
    assert page.locator("#mcp tbody tr").count() == 0
    # A good one is listed, tested against a real MCP server by a tools worker, and deleted.
    token = secrets.token_urlsafe(24)
    with mcp_server("http", f"--token={token}") as url:
        page.fill("#mcp-name", "everything")
        page.fill("#mcp-endpoint", url)
        page.select_option("#mcp-auth", "bearer")
        page.fill("#mcp-bearer", token)
        page.click("#mcp-add button[type=submit]")
        row = page.locator("#mcp tr[data-name=everything]")
        expect(row).to_be_visible()
        expect(page.locator("#mcp-add .field-error")).to_have_count(0)
        row.locator("button.test").click()
        expect(row.locator(".result")).to_contain_text(re.compile(r"\d+ tools: "), timeout=30_000)
        assert token not in page.content()
        row.locator("button.delete").click()
        expect(row).to_have_count(0)


def test_chat_lists_the_sessions_tool_calls(page: Page, stack: Stack) -> None:
    token = secrets.token_urlsafe(24)
    with mcp_server("http", f"--token={token}") as url:
        config = httpx.post(
            f"{stack.base_url}/api/v1/mcp/configurations",
            json={
                "name": "calculator",
                "transport": "http",
                "endpoint_url": url,
                "auth_type": "bearer",
                "bearer_token": token,
            },
            headers=stack.headers(),
        ).json()
        sign_in(page, stack.token())
        session_id = start_echo(page, "Tool calls")
        # What the agent's gateway does for each call it makes: a tools worker calls the server and
        # the call's events land in the session's stream.
        answer = httpx.post(
            f"{stack.base_url}/api/v1/sessions/{session_id}/tool-calls",
            json={"config_id": config["id"], "tool": "add", "arguments": {"a": 2, "b": 3}},
            headers=stack.headers(),
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        expect(page.locator("#tool-calls li")).to_have_text(["add · completed"], timeout=30_000)


@pytest.fixture(scope="module")
def oauth_mcp_url() -> Iterator[str]:
    server = FakeAuthorizationServer()
    server.start()
    try:
        secret = f"--introspection-secret={server.resource_server_secret}"
        with mcp_server("oauth", "--issuer", server.url, secret) as url:
            yield url
    finally:
        server.stop()


def test_mcp_oauth_connects_in_a_popup(page: Page, stack: Stack, oauth_mcp_url: str) -> None:
    sign_in(page, stack.token())
    page.click("nav a[href='#/mcp']")
    page.fill("#mcp-name", "oauth-server")
    page.fill("#mcp-endpoint", oauth_mcp_url)
    page.select_option("#mcp-auth", "oauth")
    page.click("#mcp-add button[type=submit]")
    row = page.locator("#mcp tr[data-name=oauth-server]")
    expect(row.locator(".badge")).to_have_text("not_connected")
    with page.expect_popup() as popup_info:
        row.locator("button.connect").click()
    popup = popup_info.value
    popup.wait_for_event("close", timeout=30_000)
    expect(row.locator(".badge")).to_have_text("connected", timeout=15_000)
    listed = httpx.get(f"{stack.base_url}/api/v1/mcp/configurations", headers=stack.headers()).json()
    assert [c["connection"] for c in listed["configurations"] if c["name"] == "oauth-server"] == ["connected"]


def test_member_does_not_see_admin_pages(page: Page, stack: Stack) -> None:
    member = stack.token(role="member")
    sign_in(page, member)
    expect(page.locator("#nav-admin")).to_be_hidden()
    page.goto("/console#/admin")
    expect(page.locator("#admin-denied")).to_contain_text("Admins only")
    expect(page.locator("#audit tbody tr")).to_have_count(0)
    # And the API refuses them anyway.
    headers = {"Authorization": f"Bearer {member}"}
    for path in ("/api/v1/audit", "/api/v1/webhooks", "/api/v1/settings"):
        assert httpx.get(f"{stack.base_url}{path}", headers=headers).status_code == 403, path


def test_admin_pages(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token(role="owner"))
    page.click("#nav-admin")
    expect(page.locator(f"#members tr[data-member='{stack.user_id}'] select")).to_have_value("owner")
    # A webhook's secret is shown once.
    page.fill("#webhook-name", "ops")
    page.fill("#webhook-target", "https://93.184.216.34/hooks/agentapi")
    page.check("#webhook-add input[value='session.ended']")
    page.click("#webhook-add button[type=submit]")
    secret = page.locator("#webhook-secret .secret").inner_text()
    assert len(secret) >= 32
    expect(page.locator("#webhooks tbody tr")).to_have_count(1)
    # Secrets are write-only: the name is listed, the value never comes back.
    page.fill("#settings-form input[name=secret_name]", "gemini_key")
    page.fill("#settings-form input[name=secret_value]", "value-never-shown-again")
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#secret-names")).to_contain_text("gemini_key")
    expect(page.locator("#settings-form input[name=secret_value]")).to_have_value("")
    page.reload()
    expect(page.locator("#secret-names")).to_contain_text("gemini_key")
    assert secret not in page.content() and "value-never-shown-again" not in page.content()
    # The audit log, filtered.
    page.fill("#audit-filters input[name=action]", "PUT /api/v1/settings")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and page.locator("#audit tbody tr").count() == 0:
        page.click("#audit-filters button[type=submit]")
        page.wait_for_timeout(500)
    expect(page.locator("#audit tbody tr").first).to_contain_text("PUT /api/v1/settings")


def test_prompts_preview(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token())
    page.click("nav a[href='#/prompts']")
    page.fill("#prompt-name", "brevity")
    page.fill("#prompt-content", "Answer in one sentence.")
    page.click("#prompt-add button[type=submit]")
    expect(page.locator("#prompts tbody tr")).to_have_count(1)
    page.select_option("#preview-agent", "codex")
    expect(page.locator("#preview")).to_contain_text("Answer in one sentence.")


def test_sessions(page: Page, stack: Stack) -> None:
    sign_in(page, stack.token(role="owner"))
    expect(page.locator("#sessions h1")).to_have_text("Sessions")
    # The console is served with a policy that forbids inline scripts and framing.
    answer = httpx.get(f"{stack.base_url}/console")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert httpx.get(f"{stack.base_url}/").headers["location"] == "/console"
    session_id = start_echo(page, "Listed session")
    page.click("nav a[href='#/sessions']")
    row = page.locator(f"tr[data-session='{session_id}']")
    expect(row).to_contain_text("Listed session")
    expect(row.locator(".badge")).to_have_text(re.compile("^(starting|running|stable)$"))
    # The earlier tests' sessions are listed too, ended with their reason.
    expect(page.locator("tbody .badge-ended").first).to_be_visible()


def test_dropped_stream_resumes_with_last_event_id(page: Page, stack: Stack) -> None:
    proxy = CuttableProxy(int(stack.base_url.rsplit(":", 1)[1]))
    try:
        page.goto(f"http://127.0.0.1:{proxy.port}/console")
        page.fill("#token", stack.token())
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#sessions")
        session_id = start_echo(page, "Dropped")
        send(page, "before the drop")
        expect(page.locator(".message.agent").last).to_contain_text("echo: before the drop", timeout=30_000)
        expect(page.locator("#connection")).to_have_text("live")
        proxy.cut()
        expect(page.locator("#connection")).to_have_text("reconnecting", timeout=30_000)
        # While the page is cut off, the conversation goes on (another client sends).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = httpx.post(
                f"{stack.base_url}/api/v1/sessions/{session_id}/message",
                json={"content": "during the drop"},
                headers=stack.headers(),
            )
            if answer.status_code != 409:
                break
            time.sleep(0.2)
        assert answer.is_success, answer.text
        expect(page.locator("#connection")).to_have_text("reconnecting")
        proxy.restore()
        expect(page.locator(".message.agent").last).to_contain_text("echo: during the drop", timeout=30_000)
        expect(page.locator("#connection")).to_have_text("live")
        expect(page.locator("#agent-status .badge")).to_have_text("stable", timeout=30_000)
        assert shown_messages(page) == stored_messages(stack, session_id)
        # The page asked for what it had missed, not for everything again.
        requests = [chunk.decode(errors="replace").lower() for chunk in proxy.sent]
        stream = f"get /api/v1/sessions/{session_id}/events"
        assert any(stream in r and "\r\nlast-event-id: " in r for r in requests), requests
    finally:
        proxy.close()
