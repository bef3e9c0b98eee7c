"""Finding 11: ``/metrics`` was open by default in production, a 1 MB request header was accepted,
and ``Last-Event-ID: 99999999999999999999999-0`` aborted the event stream after its 200."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, spawn, stop, wait_ready
from tests.security.helpers import assert_problem, production_env
from tests.test_skeleton_e2e import ECHO


def test_metrics_need_a_token_in_production(pg_urls: DbUrls, tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    for configured in (None, token):
        env, port = production_env(pg_urls, tmp_path, pg_urls.service, secrets.token_urlsafe(48))
        if configured:
            env["AGENTAPI_METRICS_TOKEN"] = configured
        proc = spawn(["serve", "--port", str(port)], env, tmp_path / "serve.log")
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            url = f"http://127.0.0.1:{port}/metrics"
            if configured is None:
                assert "AGENTAPI_METRICS_TOKEN" in str(assert_problem(httpx.get(url), 403)["detail"])
            else:
                assert_problem(httpx.get(url), 401)
                assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        finally:
            stop(proc)


async def test_oversized_headers_are_a_431(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        huge = await client.get("/api/v1/sessions", headers={**stack.headers(), "X-Padding": "a" * 1_000_000})
        assert_problem(huge, 431)
        assert (await client.get("/api/v1/sessions", headers=stack.headers())).status_code == 200


async def test_an_out_of_range_last_event_id_is_a_400_before_the_stream(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post("/api/v1/sessions", json=ECHO, headers=stack.headers())
        assert created.status_code in (201, 202), created.text
        session_id = created.json()["id"]
        try:
            for bad in ("99999999999999999999999-0", "18446744073709551616-0", "1-"):
                answer = await client.get(
                    f"/api/v1/sessions/{session_id}/events", headers={**stack.headers(), "Last-Event-ID": bad}
                )
                assert_problem(answer, 400)
        finally:
            await client.delete(f"/api/v1/sessions/{session_id}", headers=stack.headers())
