"""Real Claude Code through a real Claude Code Router (npm) per session, each organization's router
reaching its own provider: fake OpenAI-compatible chat-completions servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.agents.binaries import repo_bin
from tests.agent_cli import converse
from tests.fakes.openai_api import FakeOpenAI
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, seed_async

pytestmark = pytest.mark.timeout(180)


def alpha(text: str) -> str:
    return f"ALPHA provider answers '{text}'."


def beta(text: str) -> str:
    return f"BETA provider answers '{text}'."


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    for name in ("ccr", "claude"):
        if not repo_bin(name).exists():
            pytest.fail(f"node_modules/.bin/{name} is missing: run `npm ci` (the README's install command)")
    with FakeOpenAI(alpha) as first, FakeOpenAI(beta) as second:
        yield first, second


STACK_ENV = {"AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true", "AGENTAPI_AGENT_SETTLE_SECONDS": "2"}


def ccrouter(fake: FakeOpenAI, provider: str, model: str, secret: str) -> dict[str, object]:
    return {
        "providers": [
            {
                "name": provider,
                "api_base_url": f"{fake.base_url}/v1/chat/completions",
                "models": [model],
                "api_key_secret": secret,
            }
        ],
        "router": {"default": f"{provider},{model}", "background": f"{provider},{model}"},
    }


async def configure(stack: Stack, settings: dict[str, object], secrets: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        return await client.put(
            "/api/v1/settings",
            json={"settings": {"ccrouter": settings}, "secrets": secrets},
            headers=stack.headers(role="admin"),
        )


def routers_running(marker: str) -> list[int]:
    """Router processes whose command line or working directory names ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if "ccr" in cmdline and "start" in cmdline and marker in cwd:
            found.append(int(pid))
    return found


async def test_two_tenants_each_reach_only_their_own_provider(
    fakes: tuple[FakeOpenAI, FakeOpenAI], stack: Stack, pg_urls: DbUrls
) -> None:
    fake_a, fake_b = fakes
    tenant_a = stack
    tenant_b = dataclasses.replace(stack, org_id=uuid.uuid4(), user_id=uuid.uuid4())
    await seed_async(pg_urls.owner, tenant_b.org_id, tenant_b.user_id, "Router Org B")
    key_a, key_b = f"sk-alpha-{uuid.uuid4().hex}", f"sk-beta-{uuid.uuid4().hex}"
    saved_a = await configure(
        tenant_a, ccrouter(fake_a, "alpha", "alpha-model", "alpha_key"), {"alpha_key": key_a}
    )
    saved_b = await configure(
        tenant_b, ccrouter(fake_b, "beta", "beta-model", "beta_key"), {"beta_key": key_b}
    )
    assert saved_a.status_code == saved_b.status_code == 200, (saved_a.text, saved_b.text)
    assert key_a not in saved_a.text and saved_a.json()["secret_names"] == ["alpha_key"]

    # Each reply well before the test's timeout, so a session that never answers fails with what it
    # shows (its screen, its router's log) instead of hanging.
    talk_a, talk_b = await asyncio.gather(
        converse(tenant_a, "ccr", "Say hello", alpha("Say hello"), "Be brief.", within=120),
        converse(tenant_b, "ccrouter", "Say goodbye", beta("Say goodbye"), "Be kind.", within=120),
    )
    assert talk_a.contents("agent")[-1] == alpha("Say hello"), "one clean agent message from A's provider"
    assert talk_b.contents("agent")[-1] == beta("Say goodbye"), "one clean agent message from B's provider"
    assert talk_a.contents("user") == ["Say hello"] and talk_b.contents("user") == ["Say goodbye"]

    for fake, key, model, other_key in (
        (fake_a, key_a, "alpha-model", key_b),
        (fake_b, key_b, "beta-model", key_a),
    ):
        calls = fake.chat_requests()
        assert calls, "the router called its tenant's provider"
        assert {call.headers.get("authorization") for call in calls} == {f"Bearer {key}"}
        assert {call.body["model"] for call in calls} == {model}
        assert other_key not in repr([call.headers for call in calls] + [call.body for call in calls])
    assert "Say goodbye" not in repr([call.body for call in fake_a.chat_requests()])
    assert "Say hello" not in repr([call.body for call in fake_b.chat_requests()])

    # Sessions were deleted by converse: each session's router went with it.
    for talk in (talk_a, talk_b):
        for _ in range(300):
            if not routers_running(talk.session_id):
                break
            await asyncio.sleep(0.1)
        assert routers_running(talk.session_id) == []
    assert key_a not in stack.logs() and key_b not in stack.logs(), "provider keys never reach a log"


async def test_bad_router_settings_are_refused_naming_the_field(stack: Stack) -> None:
    fake_url = "http://127.0.0.1:9/v1/chat/completions"

    def settings(**provider: object) -> dict[str, object]:
        base = {"name": "p", "api_base_url": fake_url, "models": ["m"], "api_key_secret": "k"}
        return {"providers": [{**base, **provider}], "router": {"default": "p,m"}}

    cases = [
        (
            settings(transformer="no-such-transformer"),
            {"k": "x"},
            "settings.ccrouter.providers[0].transformer",
        ),
        (
            settings(api_base_url="http://example.com/v1"),
            {"k": "x"},
            "settings.ccrouter.providers[0].api_base_url",
        ),
        (settings(api_key_secret="absent"), {}, "settings.ccrouter.providers[0].api_key_secret"),
        (settings(api_key_secret=None), {}, "settings.ccrouter.providers[0].api_key_secret"),
        ({**settings(), "router": {"default": "p,other"}}, {"k": "x"}, "settings.ccrouter"),
    ]
    for body, secrets, field in cases:
        answer = await configure(stack, body, secrets)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        fields = [error["field"] for error in answer.json()["errors"]]
        assert field in fields, (field, fields)

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        member = await client.put(
            "/api/v1/settings",
            json={"settings": {"ccrouter": settings()}, "secrets": {"k": "x"}},
            headers=stack.headers(user_id=uuid.uuid4()),
        )
    assert member.status_code == 403
