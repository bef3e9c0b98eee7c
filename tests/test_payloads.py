"""Stream payloads: what earlier versions wrote still reads, and what is written now reads the same
way in an earlier version (field for field), on real Redis where the entries live."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

import pytest
import redis.asyncio
from pydantic import ValidationError

from events.audit import audit_event
from events.envelope import Event, EventType
from events.payloads import (
    AuditRecord,
    Interrupt,
    McpWork,
    OAuthRefresh,
    PermissionChoice,
    RawKeys,
    SessionInput,
    SessionRequest,
    Stop,
    ToolCall,
    Upload,
    UserMessage,
    WebhookNotice,
    WebhookReceived,
    WebhookRedelivery,
    input_fields,
    parse_input,
    webhook_notify,
)
from events.redaction import REDACTED
from events.session_state import queue_input, start_turn
from events.streams import Names

URL = "redis://127.0.0.1:6379/0"
ORG = uuid.UUID("6f1c0c1e-0000-4000-8000-000000000001")

# Input entries exactly as the ingress and workers wrote them before the payloads were typed.
OLD_INPUT_ENTRIES: list[tuple[dict[str, str], SessionInput]] = [
    ({"type": "user", "content": "fix the tests"}, UserMessage(content="fix the tests")),
    ({"type": "raw", "content": "\x1b[A"}, RawKeys(content="\x1b[A")),
    ({"type": "interrupt", "content": ""}, Interrupt()),
    ({"type": "stop", "content": ""}, Stop()),
    (
        {"type": "upload", "key": "p:session:s:upload:ab12", "name": "notes.txt"},
        Upload(key="p:session:s:upload:ab12", name="notes.txt"),
    ),
    (
        {"type": "permission", "request_id": "r1", "option_id": "allow", "actor": "user:1"},
        PermissionChoice(request_id="r1", option_id="allow", actor="user:1"),
    ),
]


async def test_old_input_entries_in_redis_read_and_new_ones_are_written_field_for_field() -> None:
    names = Names(f"agentapi-test-payloads-{uuid.uuid4().hex[:8]}:")
    session = uuid.uuid4()
    client = redis.asyncio.Redis.from_url(URL, decode_responses=True)
    stream = names.session_input(session)
    try:
        for old, _ in OLD_INPUT_ENTRIES:
            await client.xadd(stream, old)  # type: ignore[arg-type]  # a literal dict of str, as before
        for _, item in OLD_INPUT_ENTRIES:
            await queue_input(client, names, session, item)
        entries = [fields for _, fields in await client.xrange(stream)]
        old_entries, new_entries = entries[: len(OLD_INPUT_ENTRIES)], entries[len(OLD_INPUT_ENTRIES) :]
        assert [parse_input(fields) for fields in old_entries] == [item for _, item in OLD_INPUT_ENTRIES]
        # A worker still on the earlier version reads the hash it always read.
        assert new_entries == [old for old, _ in OLD_INPUT_ENTRIES]
    finally:
        await client.delete(stream)
        await client.aclose()


async def test_a_claimed_turn_queues_the_same_user_entry() -> None:
    names = Names(f"agentapi-test-payloads-{uuid.uuid4().hex[:8]}:")
    session = uuid.uuid4()
    client = redis.asyncio.Redis.from_url(URL, decode_responses=True)
    try:
        assert not await start_turn(client, names, session, "hello")  # no host says stable yet
        await client.hset(names.session_state(session), "status", "stable")
        assert await start_turn(client, names, session, "hello")
        [(_, fields)] = await client.xrange(names.session_input(session))
        assert fields == {"type": "user", "content": "hello"}
        assert parse_input(fields) == UserMessage(content="hello")
    finally:
        await client.delete(names.session_input(session), names.session_state(session))
        await client.aclose()


@pytest.mark.parametrize(
    "fields",
    [{}, {"type": "shout", "content": "x"}, {"type": "permission", "request_id": "r1"}, {"type": "upload"}],
)
def test_an_entry_no_writer_makes_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        parse_input(fields)


def test_input_fields_are_strings() -> None:
    assert input_fields(PermissionChoice(request_id="r", option_id="o")) == {
        "type": "permission",
        "request_id": "r",
        "option_id": "o",
        "actor": "",
    }


def _envelope(type_: EventType, payload: Mapping[str, object]) -> Event:
    """An envelope as an earlier version put it on a work stream, read back from its wire form."""
    wire = json.dumps(
        {
            "id": "01JF0000000000000000000000",
            "type": str(type_),
            "v": 1,
            "ts": "2026-01-01T00:00:00Z",
            "org_id": str(ORG),
            "user_id": None,
            "correlation_id": "c",
            "payload": payload,
        }
    )
    return Event.from_wire(wire)


def test_old_tool_calls_read_and_new_ones_carry_the_same_fields() -> None:
    gateway = {
        "config_id": str(ORG),
        "tool": "echo",
        "arguments": {"x": 1},
        "source": "gateway",
        "reply": True,
    }
    api = {**gateway, "source": "api", "timeout": 5.0}
    assert ToolCall.of(_envelope(EventType.TOOL_CALL_REQUESTED, gateway)) == ToolCall(
        config_id=str(ORG), tool="echo", arguments={"x": 1}, source="gateway", reply=True
    )
    assert ToolCall.of(_envelope(EventType.TOOL_CALL_REQUESTED, api)).timeout == 5.0
    assert ToolCall.of(_envelope(EventType.TOOL_CALL_REQUESTED, {**api, "arguments": None})).arguments == {}
    # Written back, only keys the earlier tools pool ignores or reads as absent (.get) are added: a
    # null timeout, and the configuration version (null: load afresh).
    assert ToolCall.of(_envelope(EventType.TOOL_CALL_REQUESTED, api)).payload() == {**api, "version": None}
    assert ToolCall.of(_envelope(EventType.TOOL_CALL_REQUESTED, gateway)).payload() == {
        **gateway,
        "timeout": None,
        "version": None,
    }


def test_old_session_requests_read() -> None:
    old = {"agent_type": "claude", "prompt": "fix it", "custom_agent": None, "system_prompt": "be brief"}
    assert SessionRequest.of(_envelope(EventType.SESSION_REQUESTED, old)).payload() == old
    bare = SessionRequest.of(_envelope(EventType.SESSION_REQUESTED, {"system_prompt": None}))
    assert (bare.agent_type, bare.prompt, bare.custom_agent, bare.system_prompt) == ("custom", None, None, "")


def test_old_mcp_tests_and_oauth_refreshes_read() -> None:
    test = {"config_id": str(ORG), "reply": True}
    assert McpWork.of(_envelope(EventType.MCP_TEST_REQUESTED, test)).payload() == {**test, "version": None}
    versioned = {**test, "version": "2026-01-01T00:00:00+00:00"}
    assert McpWork.of(_envelope(EventType.MCP_TEST_REQUESTED, versioned)).payload() == versioned
    # The tools pool reads a tool call's configuration and reply flag the same way.
    call = {"config_id": str(ORG), "tool": "echo", "arguments": {}, "source": "api", "reply": False}
    assert McpWork.of(_envelope(EventType.TOOL_CALL_REQUESTED, call)) == McpWork(config_id=str(ORG))
    refresh = {
        "grant_id": str(ORG),
        "config_id": str(ORG),
        "version": "2026-01-01T00:00:00+00:00",
        "not_before": "2026-01-01T00:55:00+00:00",
    }
    assert OAuthRefresh.of(_envelope(EventType.MCP_OAUTH_REFRESH_REQUESTED, refresh)).payload() == refresh


def test_audit_records_keep_what_the_writer_stored_before() -> None:
    old = {
        "action": "x" * 300,
        "outcome": "exploded",
        "resource_type": "t" * 100,
        "resource_id": 42,
        "details": ["not", "a", "dict"],
        "ip": "",
        "user_agent": "u" * 600,
    }
    record = AuditRecord.of(_envelope(EventType.AUDIT_RECORDED, old))
    assert (record.action, record.outcome, record.resource_type, record.resource_id) == (
        "x" * 100,
        "error",
        "t" * 64,
        "42",
    )
    assert (record.details, record.ip, record.user_agent) == ({}, None, "u" * 512)
    assert AuditRecord.of(_envelope(EventType.AUDIT_RECORDED, {})).action == "unknown"
    assert AuditRecord.of(_envelope(EventType.AUDIT_RECORDED, {"outcome": {"a": 1}})).outcome == "error"

    built = audit_event(
        org_id=ORG,
        actor_user_id=None,
        action="session.started",
        outcome="success",
        details={"api_token": "s3cret", "n": 1},
        user_agent="curl",
    )
    assert built.payload == {
        "action": "session.started",
        "outcome": "success",
        "resource_type": None,
        "resource_id": None,
        "details": {"api_token": REDACTED, "n": 1},
        "ip": None,
        "user_agent": "curl",
    }


def test_webhook_payloads_read_both_notify_shapes() -> None:
    received = {"webhook_id": str(ORG), "delivery_id": "d-1", "body": {"ref": "main"}}
    assert WebhookReceived.of(_envelope(EventType.WEBHOOK_RECEIVED, received)).payload() == received
    assert WebhookReceived.of(_envelope(EventType.WEBHOOK_RECEIVED, {**received, "body": None})).body is None

    result = Event(type=EventType.SESSION_ENDED, org_id=ORG, user_id=None)
    notice = webhook_notify(
        _envelope(EventType.WEBHOOK_NOTIFY_REQUESTED, {"event": result.to_wire(), "stream_id": "1-0"})
    )
    assert isinstance(notice, WebhookNotice)
    assert (notice.source(), notice.stream_id) == (result, "1-0")
    redelivery = webhook_notify(_envelope(EventType.WEBHOOK_NOTIFY_REQUESTED, {"delivery_id": "d-2"}))
    assert redelivery == WebhookRedelivery(delivery_id="d-2")
