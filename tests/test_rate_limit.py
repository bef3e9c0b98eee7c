"""Rate limits per user and per organization, shared through Redis."""

from __future__ import annotations

import uuid

import httpx

from tests.fixtures.stack import Stack

STACK_ENV = {"AGENTAPI_RATE_LIMIT_PER_USER": "5", "AGENTAPI_RATE_LIMIT_PER_ORG": "8"}


async def test_user_then_org_limits_answer_429_with_retry_after(stack: Stack) -> None:
    first, second = stack.headers(), stack.headers(user_id=uuid.uuid4())
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        statuses = [(await client.get("/api/v1/sessions", headers=first)).status_code for _ in range(6)]
        limited = await client.get("/api/v1/sessions", headers=first)
        assert statuses[:5] == [200] * 5 and statuses[5] == 429
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "this user" in limited.json()["detail"]
        # Refused requests charge nothing: the organization has used 5 of its 8, so the other
        # member gets three more, then the organization's limit.
        for _ in range(3):
            assert (await client.get("/api/v1/sessions", headers=second)).status_code == 200
        org_limited = await client.get("/api/v1/sessions", headers=second)
        assert org_limited.status_code == 429 and "organization" in org_limited.json()["detail"]
        assert (await client.get("/health")).status_code == 200
