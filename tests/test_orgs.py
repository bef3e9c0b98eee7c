"""Organizations and members over HTTP: who may do what, and an org always keeps an owner."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.fixtures.stack import Stack


@pytest.fixture
async def client(stack: Stack) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        yield http  # type: ignore[misc]


async def test_organization_and_member_lifecycle(client: httpx.AsyncClient, stack: Stack) -> None:
    owner_id, admin_id, member_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    slug = f"acme-{uuid.uuid4().hex[:8]}"
    body = {"name": "Acme", "slug": slug, "owner_user_id": str(owner_id), "owner_email": "boss@acme.example"}
    assert (
        await client.post("/api/v1/orgs", json=body, headers=stack.headers(role="owner"))
    ).status_code == 403
    created = await client.post("/api/v1/orgs", json=body, headers=stack.headers(superadmin=True))
    assert created.status_code == 201, created.text
    org_id = created.json()["id"]
    assert (
        await client.post("/api/v1/orgs", json=body, headers=stack.headers(superadmin=True))
    ).status_code == 409

    def as_(user: uuid.UUID, role: str) -> dict[str, str]:
        return stack.headers(org_id=uuid.UUID(org_id), user_id=user, role=role)

    owner, admin, member = as_(owner_id, "owner"), as_(admin_id, "admin"), as_(member_id, "member")
    members = f"/api/v1/orgs/{org_id}/members"
    assert (
        await client.post(members, json={"user_id": str(admin_id), "role": "admin"}, headers=owner)
    ).status_code == 201
    assert (await client.post(members, json={"user_id": str(member_id)}, headers=admin)).status_code == 201
    assert (await client.post(members, json={"user_id": str(member_id)}, headers=admin)).status_code == 409
    assert (
        await client.post(members, json={"user_id": str(uuid.uuid4())}, headers=member)
    ).status_code == 403
    assert (
        await client.post(members, json={"user_id": str(uuid.uuid4()), "role": "owner"}, headers=admin)
    ).status_code == 403
    listed = (await client.get(members, headers=member)).json()["members"]
    assert {(m["user_id"], m["role"]) for m in listed} == {
        (str(owner_id), "owner"),
        (str(admin_id), "admin"),
        (str(member_id), "member"),
    }
    assert (await client.patch(f"{members}/{member_id}", json={"role": "admin"}, headers=admin)).json()[
        "role"
    ] == "admin"
    assert (
        await client.patch(f"{members}/{owner_id}", json={"role": "member"}, headers=admin)
    ).status_code == 403
    last_owner = await client.patch(f"{members}/{owner_id}", json={"role": "admin"}, headers=owner)
    assert last_owner.status_code == 409 and "keep an owner" in last_owner.json()["detail"]
    assert (await client.delete(f"{members}/{owner_id}", headers=owner)).status_code == 409
    assert (await client.delete(f"{members}/{member_id}", headers=admin)).status_code == 204
    assert (
        await client.patch(f"{members}/{member_id}", json={"role": "member"}, headers=admin)
    ).status_code == 404
    # The removed member's token no longer works here, and does not bring them back.
    removed = await client.get(f"/api/v1/orgs/{org_id}", headers=member)
    assert removed.status_code == 403 and "removed" in removed.json()["detail"]
    listed = (await client.get(members, headers=admin)).json()["members"]
    assert str(member_id) not in {m["user_id"] for m in listed}
    # A demoted admin acts as a member at once, whatever their token says.
    assert (
        await client.patch(f"{members}/{admin_id}", json={"role": "member"}, headers=owner)
    ).status_code == 200
    assert (await client.post(members, json={"user_id": str(uuid.uuid4())}, headers=admin)).status_code == 403
    # Added again, the member is back.
    assert (await client.post(members, json={"user_id": str(member_id)}, headers=owner)).status_code == 201
    assert (await client.get(f"/api/v1/orgs/{org_id}", headers=member)).status_code == 200

    # Another organization's people see nothing of this one.
    outsider = stack.headers(role="owner")
    for method, path in [
        ("GET", f"/api/v1/orgs/{org_id}"),
        ("GET", members),
        ("PATCH", f"{members}/{admin_id}"),
        ("DELETE", f"{members}/{admin_id}"),
    ]:
        response = await client.request(
            method, path, headers=outsider, json={"role": "member"} if method == "PATCH" else None
        )
        assert response.status_code == 404, (method, path)
        assert "Acme" not in response.text
    assert (await client.get(f"/api/v1/orgs/{org_id}", headers=owner)).json()["slug"] == slug
