"""Agent failures are told, not silent, through the whole platform with the real CLIs: a Claude Code
session on a deployment without its model settings is refused at create (422 naming them), and a
real Claude Code Router whose provider is unreachable shows "API error · Retrying", which reaches
the client as coder/agentapi's ``agent_error`` and ``detail: error``, then fails the session with
that reason once AGENTAPI_AGENT_ERROR_FAIL_SECONDS have passed."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from services.agents.binaries import repo_bin
from tests.fixtures.stack import Stack
from tests.test_ccrouter import configure
from tests.test_skeleton_e2e import named, read_events

pytestmark = pytest.mark.timeout(180)

# How long the failure shows before the session fails with it: most of the test's time is this wait.
FAIL_SECONDS = 3
STACK_ENV = {
    "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    "AGENTAPI_AGENT_SETTLE_SECONDS": "2",
    "AGENTAPI_AGENT_ERROR_FAIL_SECONDS": str(FAIL_SECONDS),
}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), never listening."""
    for name in ("ccr", "claude"):
        if not repo_bin(name).exists():
            pytest.fail(f"node_modules/.bin/{name} is missing: run `npm ci` (the README's install command)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_claude_without_model_settings_is_refused_naming_them(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        refused = await client.post(
            "/api/v1/sessions", json={"agent_type": "claude", "prompt": "Say hello"}, headers=headers
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "AGENTAPI_ANTHROPIC_API_KEY" in refused.json()["detail"]
        assert refused.json()["errors"][0]["field"] == "agent_type"
        # No half-made session counts against the caller's quota.
        listed = (await client.get("/api/v1/sessions", headers=headers)).json()
        assert not [s for s in listed["sessions"] if s["agent_type"] == "claude"]
        ccr = await client.post("/api/v1/sessions", json={"agent_type": "ccr"}, headers=headers)
        assert ccr.status_code == 422 and "tenant settings: ccrouter" in ccr.json()["detail"], ccr.text


async def test_an_unreachable_provider_is_an_agent_error_then_a_failed_session(
    stack: Stack, closed_port: int
) -> None:
    settings = {
        "providers": [
            {
                "name": "down",
                "api_base_url": f"http://127.0.0.1:{closed_port}/v1/chat/completions",
                "models": ["down-model"],
                "api_key_secret": "down_key",
            }
        ],
        "router": {"default": "down,down-model", "background": "down,down-model"},
    }
    configured = await configure(stack, settings, {"down_key": "sk-down"})
    assert configured.status_code == 200, configured.text
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/sessions", json={"agent_type": "ccrouter", "prompt": "Say hello"}, headers=headers
        )
        assert created.status_code == 202, created.text
        session = created.json()
        events = await read_events(client, session["events_url"], headers, until=named("session_ended"))
        status = (await client.get(f"/api/v1/sessions/{session['id']}/status", headers=headers)).json()
        row = (await client.get(f"/api/v1/sessions/{session['id']}", headers=headers)).json()

    errors = [json.loads(e.data) for e in events if e.event == "agent_error"]
    assert errors, f"an agent_error was emitted; events: {[e.event for e in events]}"
    assert errors[0]["level"] == "warning" and errors[0]["kind"] == "api_error"
    assert errors[0]["message"].startswith("API error · Retrying in "), errors[0]
    assert errors[0]["time"].endswith("Z")
    # A countdown is one error, not one event a second.
    assert len({e["message"].split(" · ")[0] for e in errors}) == 1 and len(errors) < 15
    details = [json.loads(e.data).get("detail") for e in events if e.event == "status_change"]
    assert "error" in details, "status_change said the agent shows an error"

    ended = json.loads(events[-1].data)
    assert ended["type"] == "session.failed"
    assert ended["reason"].startswith("agent_error (api_error): API error · Retrying in "), ended
    assert row["status"] == "failed" and row["end_reason"] == ended["reason"]
    assert status["status"] == "stable" and status["session_status"] == "failed"
    assert status["detail"] == "error" and status["end_reason"] == ended["reason"]


@pytest.mark.parametrize(
    ("command", "kind", "reason"),
    [
        ("/crash", "session.failed", "agent_error (crashed): the agent exited with code 3"),
        ("/exit", "session.ended", "exited"),
    ],
)
async def test_an_agent_that_crashes_fails_its_session_and_one_that_exits_ends_it(
    stack: Stack, command: str, kind: str, reason: str
) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/sessions",
            json={"agent_type": "custom", "custom_agent": "echo", "prompt": command},
            headers=headers,
        )
        assert created.status_code == 202, created.text
        session = created.json()
        events = await read_events(client, session["events_url"], headers, until=named("session_ended"))
        row = (await client.get(f"/api/v1/sessions/{session['id']}", headers=headers)).json()
    ended = json.loads(events[-1].data)
    assert (ended["type"], ended["reason"]) == (kind, reason)
    assert row["end_reason"] == reason
