"""Real ACP agents (npm @zed-industries/claude-code-acp) through the whole platform, against the fake
Messages API on 127.0.0.1: multi-turn conversation, tool calls through the MCP gateway, permission
requests answered through the API, cancel, and the same conversation over the PTY side by side.

Every wait is for an event with a generous limit; nothing asserts on wall-clock time except the
issue's "cancel stops within 1 s", measured between two events the stack itself timestamps.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from httpx_sse import ServerSentEvent

from events.streams import Names
from tests.agent_cli import ANTHROPIC_API_KEY, claude_env, model_reply, upstream_fixture
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.model_server import SLOW_PREFIX
from tests.fixtures.mcp import start_mcp_server
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, running_stack, stop
from tests.test_skeleton_e2e import agent_said, named, read_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
ECHO_PING = "Echo ping with the tool"


fake_anthropic = upstream_fixture("claude-code-acp", FakeAnthropic)


@pytest.fixture(scope="module")
def mcp_url_and_token() -> Iterator[tuple[str, str]]:
    token = secrets.token_urlsafe(24)
    # A generous start-up wait: on a busy machine the server's imports alone can take 15 s.
    proc, url = start_mcp_server("http", f"--token={token}", timeout=90)
    try:
        yield url, token
    finally:
        stop(proc)


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    return {
        **claude_env(request.getfixturevalue("fake_anthropic"), "acp"),
        "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    }


@pytest.fixture(scope="module")
def tools_stack(stack: Stack) -> Stack:
    stack.start_worker("tools", "audit")
    return stack


def data(sse: ServerSentEvent) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(sse.data)
    return parsed


def event_type(name: str) -> Callable[[ServerSentEvent], bool]:
    return lambda sse: bool(sse.data) and json.loads(sse.data).get("type") == name


def stable(sse: ServerSentEvent) -> bool:
    return sse.event == "status_change" and data(sse)["status"] == "stable"


async def start(client: httpx.AsyncClient, headers: dict[str, str], agent_type: str = "claude") -> str:
    created = await client.post("/api/v1/sessions", json={"agent_type": agent_type}, headers=headers)
    assert created.status_code == 202, created.text
    session_id: str = created.json()["id"]
    await read_events(client, f"/api/v1/sessions/{session_id}/events", headers, until=stable)
    return session_id


async def post_message(
    client: httpx.AsyncClient, headers: dict[str, str], session_id: str, text: str
) -> None:
    sent = await client.post(
        f"/api/v1/sessions/{session_id}/message", json={"content": text}, headers=headers
    )
    assert sent.status_code == 200, sent.text


async def say(client: httpx.AsyncClient, headers: dict[str, str], session_id: str, text: str) -> None:
    """Send ``text`` and wait for its reply to complete (each text is unique within a session)."""
    url = f"/api/v1/sessions/{session_id}/events"
    sent = await client.post(
        f"/api/v1/sessions/{session_id}/message", json={"content": text}, headers=headers
    )
    assert sent.status_code == 200, sent.text
    await read_events(client, url, headers, until=agent_said(model_reply(text)))


async def test_a_multi_turn_conversation_over_acp_comes_back_exact(
    fake_anthropic: FakeAnthropic, stack: Stack
) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        agents = (await client.get("/api/v1/agents", headers=headers)).json()["agents"]
        claude = next(agent for agent in agents if agent["type"] == "claude")
        assert claude["transport"] == "acp" and claude["installed"], "claude-code-acp is what runs"
        session_id = await start(client, headers)
        status = (await client.get(f"/api/v1/sessions/{session_id}/status", headers=headers)).json()
        assert status["backend"] == "acp" and status["transport"] == "acp"
        assert status["status"] == "stable"
        for text in ("Say hello", "And a second turn", "A third"):
            await say(client, headers, session_id, text)
        messages = (await client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers)).json()[
            "messages"
        ]
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    assert [m["id"] for m in messages] == list(range(7))
    assert "Claude Code" in messages[0]["content"] and messages[0]["role"] == "agent"
    turns = [(m["role"], m["content"]) for m in messages[1:]]
    assert turns == [
        ("user", "Say hello"),
        ("agent", model_reply("Say hello")),
        ("user", "And a second turn"),
        ("agent", model_reply("And a second turn")),
        ("user", "A third"),
        ("agent", model_reply("A third")),
    ], "exact replies, no chrome"
    calls = fake_anthropic.message_requests()
    assert all(call.headers.get("x-api-key") == ANTHROPIC_API_KEY for call in calls)


async def two_turns_under_a_system_prompt(
    stack: Stack, agent_type: str, model_calls: Callable[[], list[Any]]
) -> tuple[list[dict[str, Any]], list[Any]]:
    """A user prompt naming a fresh marker, then two turns with ``agent_type`` over ACP: exact
    replies, and the marker in the model calls. The stored messages and the model calls, for the
    caller to check what is its agent's own."""
    headers = stack.headers()
    marker = f"house-rule-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        saved = await client.post(
            "/api/v1/prompts",
            json={"scope": "user", "name": f"{agent_type} acp test", "content": f"Always follow {marker}."},
            headers=headers,
        )
        assert saved.status_code == 201, saved.text
        session_id = await start(client, headers, agent_type)
        status = (await client.get(f"/api/v1/sessions/{session_id}/status", headers=headers)).json()
        assert status["backend"] == "acp"
        for text in ("Say hello", "And a second turn"):
            await say(client, headers, session_id, text)
        messages = (await client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers)).json()
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    assert [(m["role"], m["content"]) for m in messages["messages"][1:]] == [
        ("user", "Say hello"),
        ("agent", model_reply("Say hello")),
        ("user", "And a second turn"),
        ("agent", model_reply("And a second turn")),
    ]
    calls = model_calls()
    assert calls and any(marker in json.dumps(call.body) for call in calls), "the system prompt reached it"
    return messages["messages"], calls


async def test_an_mcp_tool_call_asks_permission_through_the_api_and_runs_through_the_gateway(
    fake_anthropic: FakeAnthropic, tools_stack: Stack, mcp_url_and_token: tuple[str, str]
) -> None:
    headers = tools_stack.headers()
    fake_anthropic.tool_uses[ECHO_PING] = ("mcp__agentapi__tools__echo", {"text": "ping"})
    fake_anthropic.tool_uses["Echo pong with the tool"] = ("mcp__agentapi__tools__echo", {"text": "pong"})
    async with httpx.AsyncClient(base_url=tools_stack.base_url, timeout=60) as client:
        allowed = await tool_call_with_permission(client, headers, "claude", mcp_url_and_token)
        asked, allow, session_id = allowed.request, allowed.option_id, allowed.session_id
        assert asked["tool_call"]["raw_input"] == {"text": "ping"} and asked["tool_call"]["title"]
        events_url = f"/api/v1/sessions/{session_id}/events"

        # Denied: the tool never runs and the model hears so.
        await post_message(client, headers, session_id, "Echo pong with the tool")
        asked_again = await read_events(
            client,
            events_url,
            headers,
            until=lambda sse: (
                sse.event == "permission_request" and data(sse)["request_id"] != asked["request_id"]
            ),
        )
        second = data(asked_again[-1])
        reject = next(o["option_id"] for o in second["options"] if o["kind"] == "reject_once")
        refused = await client.post(
            f"/api/v1/sessions/{session_id}/permissions/{second['request_id']}",
            json={"option_id": reject},
            headers=headers,
        )
        assert refused.status_code == 202, refused.text
        # claude-code-acp ends the turn on a refusal (Claude Code's "interrupt"), with no model call.
        after = await read_events(client, events_url, headers, until=stable_after("Echo pong with the tool"))
        unknown = await client.post(
            f"/api/v1/sessions/{session_id}/permissions/01J00000000000000000000000",
            json={"option_id": allow},
            headers=headers,
        )
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)

    decisions = [data(e) for e in after if e.event == "permission_decision"]
    assert [(d["decided_by"], d["option_id"]) for d in decisions] == [("user", allow), ("user", reject)]
    assert decisions[0]["actor_user_id"] == str(tools_stack.user_id)
    denied_calls = [
        data(e) for e in after if e.event == "tool_call" and data(e)["type"] == "tool_call.completed"
    ]
    assert len(denied_calls) == 1, "the refused call never reached the gateway"


@dataclass
class AllowedCall:
    session_id: str
    request: dict[str, Any]  # the permission request's event data
    option_id: str  # the "allow once" answer it was given
    events: list[ServerSentEvent]  # the session's events up to the reply that quotes the tool's output


async def tool_call_with_permission(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    agent_type: str,
    mcp_url_and_token: tuple[str, str],
    reports_tool_use: bool = True,
) -> AllowedCall:
    """Configure the echo MCP server as ``tools``, start an ``agent_type`` session and send it
    :data:`ECHO_PING` (the caller's fake model answers it with a call of the echo tool, by the name
    that agent gives it): the permission request reaches the client, its answer the agent and the
    call the session's MCP gateway, and the tool's output goes back to the model. The session is
    left running for the caller. Without ``reports_tool_use``, /status is not checked for
    ``detail: tool_use``: Gemini CLI announces a call that needs a permission only inside the
    request (as ``pending``), and then only its completion, so the host never sees it running."""
    url, token = mcp_url_and_token
    config = await client.post(
        "/api/v1/mcp/configurations",
        json={
            "name": "tools",
            "transport": "http",
            "endpoint_url": url,
            "auth_type": "bearer",
            "bearer_token": token,
        },
        headers=headers,
    )
    assert config.status_code == 201, config.text
    session_id = await start(client, headers, agent_type)
    events_url = f"/api/v1/sessions/{session_id}/events"
    await post_message(client, headers, session_id, ECHO_PING)
    asked = data((await read_events(client, events_url, headers, until=named("permission_request")))[-1])
    if reports_tool_use:
        # While the call waits for its permission, /status says what the agent is doing.
        status_url = f"/api/v1/sessions/{session_id}/status"
        async with asyncio.timeout(30):
            while (await client.get(status_url, headers=headers)).json()["detail"] != "tool_use":
                await asyncio.sleep(0.1)
    allow = next(o["option_id"] for o in asked["options"] if o["kind"] == "allow_once")
    answer_url = f"/api/v1/sessions/{session_id}/permissions/{asked['request_id']}"
    assert asked["answer_url"] == answer_url
    wrong = await client.post(answer_url, json={"option_id": "no-such-option"}, headers=headers)
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "option_id"
    answered = await client.post(answer_url, json={"option_id": allow}, headers=headers)
    assert answered.status_code == 202, answered.text
    again = await client.post(answer_url, json={"option_id": allow}, headers=headers)
    assert again.status_code == 404, "an answered request cannot be answered twice"
    # Every fake model answers a tool's result with "TOOL-RESULT: <its output>".
    events = await read_events(client, events_url, headers, until=completed_with("TOOL-RESULT"))
    assert "echo: ping" in data(events[-1])["message"], "the tool's output went back to the model"
    gateway = [data(e) for e in events if e.event == "tool_call" and data(e)["type"].startswith("tool_call.")]
    assert any(g["type"] == "tool_call.completed" and g.get("tool") == "echo" for g in gateway), (
        "the call went through the session's MCP gateway"
    )
    agent_calls = [g for g in gateway if g["type"] == "tool_call.agent"]
    assert agent_calls and agent_calls[-1]["status"] == "completed", "the agent's own view of the call"
    if reports_tool_use:
        details = [data(e).get("detail") for e in events if e.event == "status_change"]
        assert "tool_use" in details and details[-1] is None, "tool_use while the call ran, then cleared"
    return AllowedCall(session_id, asked, allow, events)


async def test_cancel_during_a_reply_stops_it(fake_anthropic: FakeAnthropic, stack: Stack) -> None:
    await cancel_during_a_reply(stack, "claude")


async def cancel_during_a_reply(stack: Stack, agent_type: str) -> None:
    """Esc (coder/agentapi clients' interrupt) becomes session/cancel: the turn ends with what had
    arrived, long before the rest of the reply would have (the fakes stream a chunk per 0.5 s)."""
    headers = stack.headers()
    text = f"{SLOW_PREFIX} tell a long story"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        session_id = await start(client, headers, agent_type)
        events_url = f"/api/v1/sessions/{session_id}/events"
        await post_message(client, headers, session_id, text)
        await read_events(client, events_url, headers, until=agent_grew(16))
        escaped = await client.post(
            f"/api/v1/sessions/{session_id}/message", json={"content": "\x1b", "type": "raw"}, headers=headers
        )
        assert escaped.status_code == 200, escaped.text
        cancelled_at = time.monotonic()
        await read_events(client, events_url, headers, until=stable_after(text))
        print(
            f"{agent_type}: cancel → stable: {time.monotonic() - cancelled_at:.2f} s (as the client sees it)"
        )
        # A turn's messages are stored before its end is announced.
        messages = (await client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers)).json()
        # The session takes the next message at once.
        await say(client, headers, session_id, "After the cancel")
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    cut = messages["messages"][-1]
    assert cut["role"] == "agent" and model_reply(text).startswith(cut["content"])
    assert 16 <= len(cut["content"]) < len(model_reply(text)), "the reply was cut short"


def completed_with(fragment: str) -> Callable[[ServerSentEvent], bool]:
    return lambda sse: event_type("message.completed")(sse) and fragment in data(sse)["message"]


def agent_grew(length: int) -> Callable[[ServerSentEvent], bool]:
    def grown(sse: ServerSentEvent) -> bool:
        return (
            sse.event == "message_update"
            and data(sse)["role"] == "agent"
            and data(sse)["id"] > 0
            and len(data(sse)["message"]) >= length
        )

    return grown


def stable_after(user_text: str) -> Callable[[ServerSentEvent], bool]:
    """The first ``stable`` after the user message ``user_text`` (replays start from the beginning)."""
    seen = False

    def match(sse: ServerSentEvent) -> bool:
        nonlocal seen
        if (
            sse.event == "message_update"
            and data(sse)["role"] == "user"
            and data(sse)["message"] == user_text
        ):
            seen = True
        return seen and stable(sse)

    return match


def home_mentions(stack: Stack, session_id: str, word: str) -> bool:
    """Whether the agent's own files (its HOME, where each CLI keeps its transcripts) hold ``word``."""
    root = Path(stack.env["AGENTAPI_WORKSPACE_ROOT"])
    return any(
        path.is_file() and word in path.read_text(errors="replace")
        for home in root.glob(f"*/*/{session_id}/.home")
        for path in home.rglob("*")
    )


async def test_kill_9_of_the_host_resumes_the_agents_session(
    fake_anthropic: FakeAnthropic, stack: Stack
) -> None:
    calls = await kill_9_and_go_on(stack, "claude", fake_anthropic.message_requests)
    assert "tangerine" in json.dumps(calls[-1].body["messages"]), "the loaded session had the turn"


async def kill_9_and_go_on(
    stack: Stack, agent_type: str, model_calls: Callable[[], list[Any]], must_load: bool = True
) -> list[Any]:
    """The recovering host loads the agent's own session (session/load), so the agent remembers the
    turns before the kill: the model calls that carried the next turn, for the caller to check.
    Without ``must_load`` the host may instead start a new agent session, saying why."""
    stack.start_worker("sessions")
    headers = stack.headers()
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        session_id = await start(client, headers, agent_type)
        events_url = f"/api/v1/sessions/{session_id}/events"
        await say(client, headers, session_id, "Remember the word tangerine")
        # The agent keeps its transcript in HOME and may write it a moment after the turn ends; a
        # session killed before that cannot be loaded (the host then starts a new one and says so).
        # The reply, not the word: Gemini CLI logs the user's prompt in a file of its own first.
        reply = model_reply("Remember the word tangerine").splitlines()[0]
        for _ in range(300):
            if await asyncio.to_thread(home_mentions, stack, session_id, reply):
                break
            await asyncio.sleep(0.1)
        host = (await store.hgetall(names.session_state(session_id)))["host"]
        victim = next(proc for proc in stack.workers if proc.pid == int(host.rsplit(":", 1)[1]))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        recovered = await read_events(client, events_url, headers, until=named("session_recovered"))
        outcome = data(recovered[-1])
        if outcome["agent_session"] != "loaded":
            assert not must_load and outcome.get("agent_session_note"), outcome
        await read_events(
            client, events_url, headers, until=lambda sse: stable(sse) and sse.id > recovered[-1].id
        )
        await say(client, headers, session_id, "Which word was it")
        messages = (await client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers)).json()
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    await store.aclose()
    assert [(m["role"], m["content"]) for m in messages["messages"][1:]] == [
        ("user", "Remember the word tangerine"),
        ("agent", model_reply("Remember the word tangerine")),
        ("user", "Which word was it"),
        ("agent", model_reply("Which word was it")),
    ]
    asked = [call for call in model_calls() if "Which word was it" in json.dumps(call.body)]
    assert asked, f"{agent_type} asked its model the next turn"
    return asked


async def transcript(stack: Stack, texts: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """A conversation of ``texts`` with claude: the stored messages after the start-up one, and the
    agent messages the event stream completed."""
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        session_id = await start(client, headers)
        for text in texts:
            await say(client, headers, session_id, text)
        messages = (await client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers)).json()
        events = await read_events(
            client,
            f"/api/v1/sessions/{session_id}/events",
            headers,
            until=completed_with(model_reply(texts[-1])),
        )
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    stored = [(m["role"], m["content"]) for m in messages["messages"][1:]]
    completed = [
        data(e)["message"] for e in events if event_type("message.completed")(e) and data(e)["id"] > 0
    ]
    return stored, completed


async def test_the_same_conversation_over_the_pty_and_acp_reads_the_same(
    fake_anthropic: FakeAnthropic,
    stack: Stack,
    pg_urls: DbUrls,
    jwt_secret: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    texts = ["Say hello", "And once more"]
    over_acp = await transcript(stack, texts)
    pty_env = claude_env(fake_anthropic, "pty")
    # Set up and torn down off the event loop: both block (migrations, seeding, stops).
    pty_stack = running_stack(pg_urls, jwt_secret, tmp_path_factory.mktemp("pty-stack"), pty_env)
    try:
        over_pty = await transcript(await asyncio.to_thread(pty_stack.__enter__), texts)
    finally:
        await asyncio.to_thread(pty_stack.__exit__, None, None, None)
    assert over_acp == over_pty
    assert over_acp[1] == [model_reply(text) for text in texts]
