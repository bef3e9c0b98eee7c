"""The tenancy matrices on the running system.

Cross-tenant: for every endpoint that takes an id, an owner of org B using org A's ids gets 404
and not a byte of org A's data, while the same request from org A works.
Roles: member, admin, owner and superadmin against every mutating endpoint, 2xx or 403 per cell.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, seed_async
from tests.test_skeleton_e2e import ECHO

pytestmark = pytest.mark.timeout(240)
STACK_ENV = {"AGENTAPI_MAX_SESSIONS_PER_USER": "10"}
CONFIG = {"transport": "http", "endpoint_url": "https://93.184.216.34/mcp"}


@dataclass
class OrgA:
    session_id: str
    config_id: str
    prompt_id: str
    member_id: str
    secrets: list[str]  # strings that only org A's data contains


@pytest.fixture(scope="module")
def org_a(stack: Stack) -> OrgA:
    owner = stack.headers(role="owner")
    marker = f"org-a-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        session = client.post("/api/v1/sessions", json={**ECHO, "prompt": marker}, headers=owner).json()
        for _ in range(120):
            messages = client.get(f"/api/v1/sessions/{session['id']}/messages", headers=owner).json()[
                "messages"
            ]
            if any(m["content"] == f"echo: {marker}" for m in messages):
                break
            time.sleep(0.25)
        config = client.post(
            "/api/v1/mcp/configurations",
            json={"name": f"{marker}-tools", **CONFIG, "scope": "organization"},
            headers=owner,
        ).json()
        prompt = client.post(
            "/api/v1/prompts",
            json={"scope": "organization", "name": f"{marker}-rules", "content": marker},
            headers=owner,
        ).json()
        member_id = str(uuid.uuid4())
        added = client.post(
            f"/api/v1/orgs/{stack.org_id}/members", json={"user_id": member_id}, headers=owner
        )
        assert added.status_code == 201
    return OrgA(session["id"], config["id"], prompt["id"], member_id, [marker, str(stack.org_id)])


def cross_tenant_requests(stack: Stack, a: OrgA) -> list[tuple[str, str, dict[str, object] | None]]:
    org = stack.org_id
    return [
        ("GET", f"/api/v1/sessions/{a.session_id}", None),
        ("GET", f"/api/v1/sessions/{a.session_id}/messages", None),
        ("GET", f"/api/v1/sessions/{a.session_id}/status", None),
        ("GET", f"/api/v1/sessions/{a.session_id}/events", None),
        ("POST", f"/api/v1/sessions/{a.session_id}/message", {"content": "hello", "type": "raw"}),
        (
            "POST",
            f"/api/v1/sessions/{a.session_id}/tool-calls",
            {"config_id": a.config_id, "tool": "x", "wait_seconds": 0},
        ),
        ("POST", "/api/v1/chat", {"session_id": a.session_id, "content": "hello", "type": "raw"}),
        ("GET", f"/api/v1/mcp/configurations/{a.config_id}", None),
        (
            "PUT",
            f"/api/v1/mcp/configurations/{a.config_id}",
            {"name": "stolen", "scope": "organization", **CONFIG},
        ),
        ("POST", "/api/v1/mcp/test", {"config_id": a.config_id, "wait_seconds": 0}),
        ("GET", f"/api/v1/prompts/{a.prompt_id}", None),
        (
            "PUT",
            f"/api/v1/prompts/{a.prompt_id}",
            {"scope": "organization", "name": "stolen", "content": "x"},
        ),
        ("GET", f"/api/v1/prompts/preview?user_id={stack.user_id}", None),
        ("GET", f"/api/v1/orgs/{org}", None),
        ("GET", f"/api/v1/orgs/{org}/members", None),
        ("POST", f"/api/v1/orgs/{org}/members", {"user_id": str(uuid.uuid4())}),
        ("PATCH", f"/api/v1/orgs/{org}/members/{a.member_id}", {"role": "admin"}),
        ("GET", f"/api/v1/users/{stack.user_id}/export", None),
        ("DELETE", f"/api/v1/sessions/{a.session_id}", None),
        ("DELETE", f"/api/v1/mcp/configurations/{a.config_id}", None),
        ("DELETE", f"/api/v1/prompts/{a.prompt_id}", None),
        ("DELETE", f"/api/v1/orgs/{org}/members/{a.member_id}", None),
        ("DELETE", f"/api/v1/users/{a.member_id}", None),
    ]


async def test_org_b_gets_404_and_nothing_of_org_a(stack: Stack, org_a: OrgA, pg_urls: DbUrls) -> None:
    org_b, owner_b = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, org_b, owner_b, "Org B")
    intruder = stack.headers(org_id=org_b, user_id=owner_b, role="owner")
    owner_a = stack.headers(role="owner")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        for method, path, body in cross_tenant_requests(stack, org_a):
            response = await client.request(method, path, json=body, headers=intruder)
            assert response.status_code == 404, (method, path, response.status_code, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            for secret in [*org_a.secrets, org_a.session_id, org_a.config_id, org_a.prompt_id]:
                assert secret not in response.text.replace(path, ""), (method, path)
        # Lists and queries answer org B's view only.
        for path in (
            "/api/v1/sessions",
            "/api/v1/mcp/configurations",
            "/api/v1/prompts?limit=100",
            f"/api/v1/audit?actor={stack.user_id}",
        ):
            response = await client.get(path, headers=intruder)
            assert response.status_code == 200, path
            assert all(secret not in response.text for secret in [*org_a.secrets, org_a.session_id]), path

        # Org A's own owner: every read works and nothing above changed anything.
        for method, path, _ in cross_tenant_requests(stack, org_a):
            if method == "GET" and not path.endswith("/events"):
                response = await client.get(path, headers=owner_a)
                assert response.status_code == 200, (path, response.text)
        config = (await client.get(f"/api/v1/mcp/configurations/{org_a.config_id}", headers=owner_a)).json()
        assert config["name"].endswith("-tools")
        messages = (await client.get(f"/api/v1/sessions/{org_a.session_id}/messages", headers=owner_a)).json()
        assert org_a.secrets[0] in json.dumps(messages)
        members = (await client.get(f"/api/v1/orgs/{stack.org_id}/members", headers=owner_a)).json()[
            "members"
        ]
        assert {"user_id": org_a.member_id, "role": "member"}.items() <= next(
            m for m in members if m["user_id"] == org_a.member_id
        ).items()


ROLES = ("member", "admin", "owner", "superadmin")


@pytest.fixture(scope="module")
def people(stack: Stack) -> dict[str, dict[str, str]]:
    """A user per role in the stack's org, with their membership role recorded."""
    owner = stack.headers(role="owner")
    headers: dict[str, dict[str, str]] = {}
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        for role in ("member", "admin", "owner"):
            user_id = uuid.uuid4()
            response = client.post(
                f"/api/v1/orgs/{stack.org_id}/members",
                json={"user_id": str(user_id), "role": role},
                headers=owner,
            )
            assert response.status_code == 201
            headers[role] = stack.headers(user_id=user_id, role=role)
    headers["superadmin"] = stack.headers(user_id=uuid.uuid4(), superadmin=True, role="member")
    return headers


async def _new_member(client: httpx.AsyncClient, stack: Stack, role: str = "member") -> str:
    user_id = str(uuid.uuid4())
    response = await client.post(
        f"/api/v1/orgs/{stack.org_id}/members",
        json={"user_id": user_id, "role": role},
        headers=stack.headers(role="owner"),
    )
    assert response.status_code == 201
    return user_id


async def _org_config(client: httpx.AsyncClient, stack: Stack) -> str:
    body = {"name": f"c-{uuid.uuid4().hex[:8]}", "scope": "organization", **CONFIG}
    return str(
        (
            await client.post("/api/v1/mcp/configurations", json=body, headers=stack.headers(role="owner"))
        ).json()["id"]
    )


async def _org_prompt(client: httpx.AsyncClient, stack: Stack) -> str:
    body = {"name": f"p-{uuid.uuid4().hex[:8]}", "scope": "organization", "content": "x"}
    return str(
        (await client.post("/api/v1/prompts", json=body, headers=stack.headers(role="owner"))).json()["id"]
    )


# action -> expected status for member, admin, owner, superadmin
MATRIX: dict[str, tuple[int, int, int, int]] = {
    "create org config": (403, 201, 201, 201),
    "replace org config": (403, 200, 200, 200),
    "delete org config": (403, 204, 204, 204),
    "create user config": (201, 201, 201, 201),
    "create org prompt": (403, 201, 201, 201),
    "replace org prompt": (403, 200, 200, 200),
    "delete org prompt": (403, 204, 204, 204),
    "create global prompt": (403, 403, 403, 201),
    "create user prompt": (201, 201, 201, 201),
    "create organization": (403, 403, 403, 201),
    "add member": (403, 201, 201, 201),
    "add owner": (403, 403, 201, 201),
    "promote member to admin": (403, 200, 200, 200),
    "demote an owner": (403, 403, 200, 200),
    "remove member": (403, 204, 204, 204),
    "erase another member": (403, 204, 204, 204),
    "read the audit trail": (403, 200, 200, 200),
    "write tenant settings": (403, 200, 200, 200),
    "start a session": (202, 202, 202, 202),
}


@pytest.mark.parametrize("action", list(MATRIX))
async def test_role_matrix(stack: Stack, people: dict[str, dict[str, str]], action: str) -> None:
    org = stack.org_id
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        for role, expected in zip(ROLES, MATRIX[action], strict=True):
            headers = people[role]
            tag = f"m{uuid.uuid4().hex[:8]}"
            if action == "create org config":
                response = await client.post(
                    "/api/v1/mcp/configurations",
                    json={"name": tag, "scope": "organization", **CONFIG},
                    headers=headers,
                )
            elif action == "replace org config":
                config_id = await _org_config(client, stack)
                response = await client.put(
                    f"/api/v1/mcp/configurations/{config_id}",
                    json={"name": tag, "scope": "organization", **CONFIG},
                    headers=headers,
                )
            elif action == "delete org config":
                response = await client.delete(
                    f"/api/v1/mcp/configurations/{await _org_config(client, stack)}", headers=headers
                )
            elif action == "create user config":
                response = await client.post(
                    "/api/v1/mcp/configurations", json={"name": tag, **CONFIG}, headers=headers
                )
            elif action == "create org prompt":
                response = await client.post(
                    "/api/v1/prompts",
                    json={"scope": "organization", "name": tag, "content": "x"},
                    headers=headers,
                )
            elif action == "replace org prompt":
                prompt_id = await _org_prompt(client, stack)
                response = await client.put(
                    f"/api/v1/prompts/{prompt_id}",
                    json={"scope": "organization", "name": tag, "content": "y"},
                    headers=headers,
                )
            elif action == "delete org prompt":
                response = await client.delete(
                    f"/api/v1/prompts/{await _org_prompt(client, stack)}", headers=headers
                )
            elif action == "create global prompt":
                response = await client.post(
                    "/api/v1/prompts",
                    json={"scope": "global", "name": f"matrix-{tag}", "content": "x"},
                    headers=headers,
                )
            elif action == "create user prompt":
                response = await client.post(
                    "/api/v1/prompts", json={"scope": "user", "name": tag, "content": "x"}, headers=headers
                )
            elif action == "create organization":
                response = await client.post(
                    "/api/v1/orgs", json={"name": tag, "slug": f"m-{tag}"}, headers=headers
                )
            elif action == "add member":
                response = await client.post(
                    f"/api/v1/orgs/{org}/members", json={"user_id": str(uuid.uuid4())}, headers=headers
                )
            elif action == "add owner":
                response = await client.post(
                    f"/api/v1/orgs/{org}/members",
                    json={"user_id": str(uuid.uuid4()), "role": "owner"},
                    headers=headers,
                )
            elif action == "promote member to admin":
                member = await _new_member(client, stack)
                response = await client.patch(
                    f"/api/v1/orgs/{org}/members/{member}", json={"role": "admin"}, headers=headers
                )
            elif action == "demote an owner":
                owner = await _new_member(client, stack, "owner")
                response = await client.patch(
                    f"/api/v1/orgs/{org}/members/{owner}", json={"role": "member"}, headers=headers
                )
            elif action == "remove member":
                response = await client.delete(
                    f"/api/v1/orgs/{org}/members/{await _new_member(client, stack)}", headers=headers
                )
            elif action == "erase another member":
                response = await client.delete(
                    f"/api/v1/users/{await _new_member(client, stack)}", headers=headers
                )
            elif action == "write tenant settings":
                response = await client.put(
                    "/api/v1/settings", json={"settings": {"by": role}}, headers=headers
                )
            elif action == "read the audit trail":
                response = await client.get("/api/v1/audit?limit=1", headers=headers)
            else:
                response = await client.post("/api/v1/sessions", json=ECHO, headers=headers)
                if response.status_code == 202:
                    await client.delete(f"/api/v1/sessions/{response.json()['id']}", headers=headers)
            assert response.status_code == expected, (action, role, response.status_code, response.text)
