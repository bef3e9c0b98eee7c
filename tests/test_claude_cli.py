"""Real Claude Code (npm @anthropic-ai/claude-code) in our PTY against a fake Messages API on
127.0.0.1: through the whole platform, and its screen formatting on captured screens."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.agent_cli import ANTHROPIC_API_KEY, claude_env, model_reply, upstream_fixture
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fixtures.stack import Stack
from tests.test_skeleton_e2e import agent_said, read_events
from workers.agents.base import LaunchContext
from workers.agents.claude import ClaudeAdapter
from workers.conversation import Change, Conversation, Timing
from workers.pty_session import PtySession
from workers.session_host import base_environment

pytestmark = pytest.mark.timeout(120)


fake_anthropic = upstream_fixture("claude", FakeAnthropic)


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    # The PTY fallback: ACP is the default (tests/test_acp.py).
    return claude_env(request.getfixturevalue("fake_anthropic"), "pty")


async def test_a_message_to_claude_comes_back_clean(fake_anthropic: FakeAnthropic, stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/sessions", json={"agent_type": "claude", "prompt": "Say hello"}, headers=headers
        )
        assert created.status_code == 202, created.text
        session = created.json()
        await read_events(client, session["events_url"], headers, until=agent_said(model_reply("Say hello")))
        messages = (await client.get(f"/api/v1/sessions/{session['id']}/messages", headers=headers)).json()[
            "messages"
        ]
        user = [m for m in messages if m["role"] == "user"]
        agent = [m for m in messages if m["role"] == "agent"]
        assert [m["content"] for m in user] == ["Say hello"]
        assert agent[-1]["content"] == model_reply("Say hello"), "one clean agent message, no TUI chrome"
        assert "Claude Code" in agent[0]["content"], "message 0 is the start-up screen"
        await client.delete(f"/api/v1/sessions/{session['id']}", headers=headers)

    calls = fake_anthropic.message_requests()
    assert calls, "claude called the fake Messages API"
    assert all(call.headers.get("x-api-key") == ANTHROPIC_API_KEY for call in calls)
    assert any(json.dumps(call.body).find("Say hello") >= 0 for call in calls)


def test_format_message_drops_progress_and_footer_lines() -> None:
    screen = "❯ Fix the bug\n\n● Looking into it\n  the fix is in main.py\n\n✶ Thinking… (esc to interrupt)\n❯\n  ? for shortcuts"  # noqa: RUF001
    assert ClaudeAdapter().format_message(screen, "Fix the bug") == "Looking into it\nthe fix is in main.py"


async def test_claude_in_the_pty_reports_each_reply_once_without_tips_or_idle_cycles(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    """Claude Code redraws its footer by itself a few seconds after it settles (the "/effort" hint
    goes): no running→stable cycle, no second completion; no interim update carries a tip."""
    adapter = ClaudeAdapter()
    ctx = LaunchContext(
        session_id=uuid.uuid4(),
        org_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        workspace=tmp_path,
        home=tmp_path / ".home",
        agent_env={"ANTHROPIC_BASE_URL": fake_anthropic.base_url, "ANTHROPIC_API_KEY": ANTHROPIC_API_KEY},
    )
    ctx.home.mkdir()
    adapter.prepare(ctx)
    pty = PtySession(
        adapter.command(ctx), cwd=tmp_path, env={**base_environment(ctx.home), **adapter.environment(ctx)}
    )
    conversation = Conversation(pty, adapter, Timing(settle_seconds=2.0))
    seen: list[Change] = []

    async def drain(until: float) -> None:
        while (left := until - time.monotonic()) > 0:
            try:
                seen.append(await asyncio.wait_for(conversation.changes.get(), left))
            except TimeoutError:
                return

    await conversation.start()
    try:
        await conversation.wait_stable(60)
        await conversation.send_user("Say hello")
        while "FAKE-REPLY" not in conversation.pty.snapshot():
            await drain(time.monotonic() + 0.1)
        await conversation.wait_stable(60)
        # The footer redraw Claude Code makes by itself once it is idle, then a settle window more.
        deadline = time.monotonic() + 30
        while "/effort" in conversation.pty.snapshot():
            assert time.monotonic() < deadline, (
                "Claude Code kept its /effort hint (the redraw this test needs)"
            )
            await drain(time.monotonic() + 0.1)
        await drain(time.monotonic() + 2 * conversation.timing.settle_seconds)
        reply = replace(conversation.messages[-1])
    finally:
        # Claude Code prints how to resume as it exits: no part of this conversation.
        await conversation.stop()

    statuses = [c.status for c in seen if c.status]
    assert reply.content == model_reply("Say hello")
    assert statuses[-2:] == ["running", "stable"] and statuses.count("stable") == 2, statuses
    completions = [c.completed.id for c in seen if c.completed is not None]
    assert completions.count(reply.id) == 1, completions
    updates = [c.message.content for c in seen if c.message is not None]
    assert not [u for u in updates if "Tip:" in u]
