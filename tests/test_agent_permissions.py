"""The organization's policy for ACP agents' permission requests: decisions, and its check on save."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from pydantic import ValidationError

from events.envelope import EventType
from events.streams import Names
from schemas.agent_permissions import PermissionPolicy
from tests.fixtures.stack import Stack
from workers.acp_permissions import PermissionDesk

OPTIONS = [
    {"option_id": "yes", "name": "Allow", "kind": "allow_once"},
    {"option_id": "no", "name": "Reject", "kind": "reject_once"},
]


def test_by_default_workspace_files_are_allowed_and_the_rest_is_asked(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "escape").symlink_to("/etc")
    policy = PermissionPolicy()
    assert policy.decide("edit", ["src/main.py", str(tmp_path / "README.md")], tmp_path) == "allow"
    assert policy.decide("read", [], tmp_path) == "allow"
    assert policy.decide("edit", ["/etc/passwd"], tmp_path) == "ask"
    assert policy.decide("read", ["../other-session/notes.txt"], tmp_path) == "ask"
    assert policy.decide("read", ["escape/passwd"], tmp_path) == "ask", "a symlink out is outside"
    for kind in ("execute", "fetch", "other", "switch_mode", None, "something-new"):
        assert policy.decide(kind, [], tmp_path) == "ask"


def test_an_org_policy_overrides_kinds_and_the_outside(tmp_path: Path) -> None:
    policy = PermissionPolicy.model_validate(
        {"kinds": {"execute": "deny", "other": "allow", "edit": "deny"}, "outside_workspace": "deny"}
    )
    assert policy.decide("execute", [], tmp_path) == "deny"
    assert policy.decide("other", [], tmp_path) == "allow"
    assert policy.decide("edit", ["inside.txt"], tmp_path) == "deny", "deny holds inside the workspace too"
    assert policy.decide("read", ["/etc/hosts"], tmp_path) == "deny"
    with pytest.raises(ValidationError):
        PermissionPolicy.model_validate({"kinds": {"execute": "maybe"}})
    with pytest.raises(ValidationError):
        PermissionPolicy.model_validate({"outside_workspace": "allow"})


async def test_an_invalid_policy_is_refused_on_save_naming_the_field(stack: Stack) -> None:
    admin = stack.headers(role="admin")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        refused = await client.put(
            "/api/v1/settings",
            json={"settings": {"agent_permissions": {"kinds": {"execute": "maybe"}, "colour": "blue"}}},
            headers=admin,
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        fields = {error["field"] for error in refused.json()["errors"]}
        assert fields == {"settings.agent_permissions.kinds.execute", "settings.agent_permissions.colour"}
        saved = await client.put(
            "/api/v1/settings",
            json={"settings": {"agent_permissions": {"kinds": {"execute": "deny"}}}},
            headers=admin,
        )
        assert saved.status_code == 200, saved.text


class Recorder:
    """Where a desk's events and audit records go: kept in order for the assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[EventType, dict[str, Any]]] = []
        self.audits: list[tuple[str, str, dict[str, Any]]] = []

    async def emit(self, event_type: EventType, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))

    async def audit(self, action: str, outcome: str, **details: Any) -> None:
        self.audits.append((action, outcome, details))


def recorded_desk(
    aredis: redis.asyncio.Redis, names: Names, session_id: str, workspace: Path, timeout: float
) -> tuple[PermissionDesk, Recorder]:
    """A desk with the default policy whose events and audit records a :class:`Recorder` keeps."""
    record = Recorder()
    desk = PermissionDesk(
        redis=aredis,
        names=names,
        session_id=session_id,
        workspace=workspace,
        policy=PermissionPolicy(),
        timeout=timeout,
        emit=record.emit,
        audit=record.audit,
    )
    return desk, record


async def test_an_unanswered_request_expires_as_a_cancellation_and_a_late_answer_is_dropped(
    aredis: redis.asyncio.Redis, names: Names, tmp_path: Path
) -> None:
    desk, record = recorded_desk(aredis, names, "s-1", tmp_path, timeout=1.0)
    command = {"tool_call_id": "t-1", "title": "rm -rf /", "kind": "execute"}
    asking = asyncio.create_task(desk.ask(command, OPTIONS))
    while not record.events:
        await asyncio.sleep(0.01)
    requested = record.events[0][1]
    key = names.permission_request("s-1", requested["request_id"])
    assert json.loads(await aredis.get(key) or "{}")["options"] == ["yes", "no"], "open for the ingress"

    assert await asking is None, "an expired request is cancelled, never allowed"
    desk.answer(requested["request_id"], "yes", "u-late")
    assert await aredis.get(key) is None, "the ingress no longer takes an answer"
    assert [event for event, _ in record.events] == [
        EventType.PERMISSION_REQUESTED,
        EventType.PERMISSION_DECIDED,
    ]
    decided = record.events[1][1]
    assert (decided["decided_by"], decided["outcome"], decided["option_id"]) == ("expiry", "cancelled", None)
    assert [(action, outcome) for action, outcome, _ in record.audits] == [("session.permission", "denied")]


async def test_a_request_the_policy_decides_is_never_opened(
    aredis: redis.asyncio.Redis, names: Names, tmp_path: Path
) -> None:
    desk, record = recorded_desk(aredis, names, "s-2", tmp_path, timeout=60.0)
    read = {"tool_call_id": "t-2", "kind": "read", "locations": [{"path": str(tmp_path / "a.txt")}]}
    assert await desk.ask(read, OPTIONS) == "yes"
    assert [(e, p["decided_by"]) for e, p in record.events] == [(EventType.PERMISSION_DECIDED, "policy")]
    assert not [key async for key in aredis.scan_iter(match=f"{names.prefix}*")], "nothing kept open"
