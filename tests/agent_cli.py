"""What the real-CLI tests share: the fake model APIs they run against and the stack settings that
point each CLI at its fake (over the PTY or ACP), and one conversation with an agent through the
whole platform."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from schemas.settings import GATEWAY_PATH
from services.agents.binaries import repo_bin
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.gemini_api import FakeGemini
from tests.fakes.model_server import FakeModelServer
from tests.fakes.openai_api import FakeOpenAI
from tests.fixtures.stack import Stack
from tests.test_skeleton_e2e import agent_said, read_events

Fake = TypeVar("Fake", bound=FakeModelServer)
ANTHROPIC_API_KEY = "sk-ant-test-key-0123456789abcdefghijklmnop"
OPENAI_API_KEY = "sk-openai-test-0123456789"
GEMINI_API_KEY = "gemini-test-key-0123456789"
# A fixed model: Gemini CLI's automatic routing would ask a classifier model first.
GEMINI_MODEL = "gemini-fake-pro"


def model_reply(text: str) -> str:
    """What the fake models answer to ``text``: two lines, so formatting must keep a message whole."""
    return f"FAKE-REPLY to '{text}'.\nA second line, as models write."


@contextmanager
def fake_upstream(binary: str, fake_class: type[Fake]) -> Iterator[Fake]:
    """The CLI's fake model API, answering with :func:`model_reply`; the CLI must be installed."""
    if not repo_bin(binary).exists():
        pytest.fail(f"node_modules/.bin/{binary} is missing: run `npm ci` (the README's install command)")
    with fake_class(model_reply) as fake:
        yield fake


def upstream_fixture(binary: str, fake_class: type[Fake]) -> Callable[[], Iterator[Fake]]:
    """A module-scoped fixture of :func:`fake_upstream`, named by the test module's name for it
    (``fake_openai = upstream_fixture("codex", FakeOpenAI)``)."""

    @pytest.fixture(scope="module")
    def fake() -> Iterator[Fake]:
        with fake_upstream(binary, fake_class) as server:
            yield server

    return fake


def transport_env(agent: str, transport: str) -> dict[str, str]:
    """The settings that run ``agent`` over ``transport``."""
    settings = {f"AGENTAPI_{agent.upper()}_TRANSPORT": transport}
    if transport == "pty":
        # The CLIs redraw for a while as they start: the production settle window, not the tests' short one.
        settings["AGENTAPI_AGENT_SETTLE_SECONDS"] = "2"
    return settings


def claude_env(fake: FakeAnthropic, transport: str) -> dict[str, str]:
    """The stack settings that run Claude Code over ``transport`` ("pty" or "acp") against ``fake``."""
    return {
        "AGENTAPI_ANTHROPIC_BASE_URL": fake.base_url,
        "AGENTAPI_ANTHROPIC_API_KEY": ANTHROPIC_API_KEY,
        **transport_env("claude", transport),
    }


def codex_env(fake: FakeOpenAI, model: str, transport: str) -> dict[str, str]:
    """The stack settings that run Codex with ``model`` over ``transport`` against ``fake``."""
    return {
        "AGENTAPI_OPENAI_BASE_URL": f"{fake.base_url}/v1",
        "AGENTAPI_OPENAI_API_KEY": OPENAI_API_KEY,
        "AGENTAPI_OPENAI_MODEL": model,
        **transport_env("codex", transport),
    }


def gemini_env(fake: FakeGemini, transport: str) -> dict[str, str]:
    """The stack settings that run Gemini CLI over ``transport`` against ``fake``."""
    return {
        "AGENTAPI_GEMINI_BASE_URL": fake.base_url,
        "AGENTAPI_GEMINI_API_KEY": GEMINI_API_KEY,
        "AGENTAPI_GEMINI_MODEL": GEMINI_MODEL,
        **transport_env("gemini", transport),
    }


@dataclass
class Conversation:
    session_id: str
    messages: list[dict[str, Any]]

    def contents(self, role: str) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == role]


async def converse(
    stack: Stack, agent_type: str, prompt: str, reply: str, system_prompt: str, within: float = 90
) -> Conversation:
    """Save ``system_prompt`` as the user's prompt, start a session with ``prompt`` and wait for
    ``reply`` to complete; the session is deleted afterwards. A reply that has not come within
    ``within`` seconds fails the test with what the session shows (see :func:`diagnosis`), instead
    of leaving it to hang until the test's own timeout."""
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        saved = await client.post(
            "/api/v1/prompts",
            json={"scope": "user", "name": f"{agent_type} adapter test", "content": system_prompt},
            headers=headers,
        )
        assert saved.status_code == 201, saved.text
        created = await client.post(
            "/api/v1/sessions", json={"agent_type": agent_type, "prompt": prompt}, headers=headers
        )
        assert created.status_code == 202, created.text
        session = created.json()
        try:
            async with asyncio.timeout(within):
                await read_events(client, session["events_url"], headers, until=agent_said(reply))
        except TimeoutError:
            pytest.fail(
                f"{agent_type} session {session['id']}: no reply {reply!r} within {within:.0f} s\n"
                + await diagnosis(client, stack, session["id"])
            )
        listed = await client.get(f"/api/v1/sessions/{session['id']}/messages", headers=headers)
        await client.delete(f"/api/v1/sessions/{session['id']}", headers=headers)
    return Conversation(session["id"], listed.json()["messages"])


async def diagnosis(client: httpx.AsyncClient, stack: Stack, session_id: str) -> str:
    """What a session shows when a test waited for it in vain: its status, screen and messages, the
    logs its helper processes (a router's) wrote, and the stack's log lines that name it."""
    headers = stack.headers()
    base = f"/api/v1/sessions/{session_id}"
    parts = []
    for name in ("status", "internal/screen", "messages"):
        try:
            answer = await client.get(f"{base}/{name}", headers=headers)
        except httpx.HTTPError as exc:
            parts.append(f"--- {name}: {exc!r} ---")
            continue
        # The screen as it looks, not as one JSON line.
        shown = answer.json()["screen"] if name == "internal/screen" and answer.is_success else answer.text
        parts.append(f"--- {name} ({answer.status_code}) ---\n{shown}")
    parts += await asyncio.to_thread(logs_about, stack, session_id)
    return "\n".join(parts)


def logs_about(stack: Stack, session_id: str) -> list[str]:
    """The end of each log in the session's private directory (the router's output, its own logs),
    and the stack's last lines that name the session."""
    private = Path(stack.env["AGENTAPI_WORKSPACE_ROOT"]) / ".private" / session_id
    helpers = [
        f"--- {log} (its end) ---\n{log.read_text(errors='replace')[-4000:]}"
        for log in sorted(private.glob("**/*.log"))
    ]
    named = [line for line in stack.logs().splitlines() if session_id in line]
    return [*helpers, "--- the stack's last lines about it ---\n" + "\n".join(named[-40:])]


def gateway_statuses(stack: Stack, session_id: str) -> list[int]:
    """The statuses the ingress answered the session's MCP gateway requests with (uvicorn before
    0.55 logged the path below the mount point, since then the request's whole path)."""
    pattern = re.compile(rf'"(POST|DELETE) (?:{GATEWAY_PATH})?/{session_id}/? HTTP/[\d.]+" (\d{{3}})')
    return [
        int(found.group(2))
        for record in stack.log_records()
        if record.get("logger") == "uvicorn.access" and (found := pattern.search(record["message"]))
    ]


def assert_gateway_used(stack: Stack, session_id: str) -> None:
    statuses = gateway_statuses(stack, session_id)
    assert statuses and all(status < 300 for status in statuses), (
        "it connected to its MCP gateway with its token"
    )
    unattributed = [
        record["message"]
        for record in stack.log_records()
        if "names no verified tenant" in record.get("message", "") and GATEWAY_PATH in record["message"]
    ]
    assert not unattributed, f"the gateway's calls are not the audit trail's requests: {unattributed[:3]}"
