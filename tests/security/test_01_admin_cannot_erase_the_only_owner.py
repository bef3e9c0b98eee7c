"""Finding 1: an admin GDPR-erased the organization's only owner (204), leaving it ownerless."""

from __future__ import annotations

import httpx

from tests.fixtures.stack import Stack
from tests.security.helpers import add_member, assert_problem


async def test_admin_cannot_erase_an_owner_and_the_last_owner_stays(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        _, admin = await add_member(client, stack, "admin")
        owner = stack.user_id  # the seeded user: the organization's only owner

        refused = await client.delete(f"/api/v1/users/{owner}", headers=admin)
        assert_problem(refused, 403)

        # Not even the owner may erase themselves while nobody else owns the organization.
        alone = await client.delete(f"/api/v1/users/{owner}", headers=stack.headers(role="owner"))
        assert "keep an owner" in str(assert_problem(alone, 409)["detail"])

        members = await client.get(f"/api/v1/orgs/{stack.org_id}/members", headers=admin)
        assert members.status_code == 200
        owners = [m for m in members.json()["members"] if m["role"] == "owner"]
        assert [m["user_id"] for m in owners] == [str(owner)]

        # An admin still erases a plain member.
        member_id, _ = await add_member(client, stack, "member")
        assert (await client.delete(f"/api/v1/users/{member_id}", headers=admin)).status_code == 204
