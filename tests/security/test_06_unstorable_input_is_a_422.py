"""Finding 6: thirteen inputs across nine endpoints got a 500: a NUL in a text field the database
stores, JSON nested 5,000 deep, and an audit ``since`` that overflows when moved to UTC. Each is
now a 422 (or 400 for the undecodable JSON) problem naming what was wrong."""

from __future__ import annotations

import json
import sys
import uuid

import httpx
import pytest

from tests.fixtures.stack import Stack
from tests.security.helpers import assert_problem
from tests.test_skeleton_e2e import ECHO

NUL = "a\u0000b"
STDIO = {"transport": "stdio", "command": sys.executable}


def _cases(stack: Stack) -> list[tuple[str, str, str, object, str]]:
    """(method, path, role, JSON body or None, the field the problem must name)."""
    org = f"/api/v1/orgs/{stack.org_id}/members"
    inbound = {"name": "hook", "direction": "inbound"}
    return [
        ("POST", "/api/v1/sessions", "member", {**ECHO, "title": NUL}, "title"),
        ("POST", "/api/v1/prompts", "member", {"name": "p", "content": NUL}, "content"),
        ("PUT", "/api/v1/settings", "owner", {"settings": {NUL: 1}}, "settings"),
        ("PUT", "/api/v1/settings", "owner", {"settings": {"k": NUL}}, "settings"),
        ("POST", "/api/v1/webhooks", "admin", {**inbound, "name": NUL}, "name"),
        (
            "POST",
            "/api/v1/webhooks",
            "admin",
            {**inbound, "action": {"type": "start_session", **ECHO, "template": NUL}},
            "action.template",
        ),
        ("POST", org, "owner", {"user_id": str(uuid.uuid4()), "email": NUL}, "email"),
        ("POST", "/api/v1/orgs", "superadmin", {"name": NUL, "slug": "nul-org"}, "name"),
        ("POST", "/api/v1/mcp/configurations", "member", {"name": "m", **STDIO, "env": {"X": NUL}}, "env"),
        ("POST", "/api/v1/mcp/configurations", "member", {"name": "m", **STDIO, "args": [NUL]}, "args"),
    ]


async def test_text_the_database_cannot_store_is_a_422_naming_the_field(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        for method, path, role, body, field in _cases(stack):
            headers = (
                stack.headers(superadmin=True, role="member")
                if role == "superadmin"
                else stack.headers(role=role)
            )
            answer = await client.request(
                method,
                path,
                content=json.dumps(body, ensure_ascii=True),
                headers={**headers, "Content-Type": "application/json"},
            )
            problem = assert_problem(answer, 422)
            assert any(e["field"] == field for e in problem["errors"]), (path, problem)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("action=a%00b", "action"),
        ("since=0001-01-01T00:00:00%2B14:00", "since"),
        ("until=0.5", "until"),
        ("action=%ff%fe", "action"),
    ],
)
async def test_odd_audit_filters_are_a_422(stack: Stack, query: str, field: str) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        answer = await client.get(f"/api/v1/audit?{query}", headers=stack.headers(role="admin"))
        problem = assert_problem(answer, 422)
        assert any(e["field"] == field for e in problem["errors"]), problem  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"agent_type": "custom", "title": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ('{"agent_type": "custom", "title": "\\ud800"}', ""),  # a lone surrogate escape
    ],
)
async def test_undecodable_json_is_a_400(stack: Stack, body: str, reason: str) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        answer = await client.post(
            "/api/v1/sessions", content=body, headers={**stack.headers(), "Content-Type": "application/json"}
        )
        assert reason in str(assert_problem(answer, 400)["reason"])
