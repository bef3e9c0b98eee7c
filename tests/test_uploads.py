"""coder/agentapi's `POST /upload` per session: the file lands in the session's workspace before any
later input, so the agent can read it at the answered path."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from api.routes.uploads import MAX_UPLOAD_BYTES
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, seed_async
from tests.test_skeleton_e2e import ECHO, agent_said, read_events

pytestmark = pytest.mark.timeout(120)


def input_length(stack: Stack, session_id: str) -> int:
    client = redis.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"])
    try:
        return int(client.xlen(f"{stack.env['AGENTAPI_REDIS_PREFIX']}session:{session_id}:input"))
    finally:
        client.close()


def placed(path: Path) -> tuple[bytes, int, list[str]]:
    """The file's bytes, its permission bits, and what else is in its folder (no partial files)."""
    return path.read_bytes(), stat.S_IMODE(path.stat().st_mode), [p.name for p in path.parent.iterdir()]


async def test_an_uploaded_file_is_readable_by_the_agent_at_the_answered_path(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "hi"}, headers=headers)
        ).json()
        url = created["events_url"]
        try:
            answered = await read_events(client, url, headers, until=agent_said("echo: hi"))
            uploaded = await client.post(
                f"/api/v1/sessions/{created['id']}/upload",
                files={"file": ("../../notes $(x).txt", b"first line\nsecond line\n", "text/plain")},
                headers=headers,
            )
            assert uploaded.status_code == 200, uploaded.text
            path = Path(uploaded.json()["filePath"])
            workspace = Path(stack.env["AGENTAPI_WORKSPACE_ROOT"])
            assert path == workspace / str(stack.org_id) / str(stack.user_id) / created["id"] / "uploads" / (
                "notes___x_.txt"
            )
            sent = await client.post(
                f"/api/v1/sessions/{created['id']}/message", json={"content": f"/cat {path}"}, headers=headers
            )
            assert sent.status_code == 200, sent.text
            await read_events(
                client,
                url,
                {**headers, "Last-Event-ID": answered[-1].id},
                until=agent_said("first line\nsecond line"),
            )
            content, mode, siblings = await asyncio.to_thread(placed, path)
            assert (content, mode, siblings) == (b"first line\nsecond line\n", 0o600, [path.name])
        finally:
            await client.delete(f"/api/v1/sessions/{created['id']}", headers=headers)


async def test_bad_uploads_are_refused_and_queue_nothing(stack: Stack, pg_urls: DbUrls) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "hi"}, headers=headers)
        ).json()
        session = f"/api/v1/sessions/{created['id']}"
        try:
            await read_events(client, created["events_url"], headers, until=agent_said("echo: hi"))
            before = input_length(stack, created["id"])

            too_big = await client.post(
                f"{session}/upload",
                files={"file": ("big.bin", b"x" * (MAX_UPLOAD_BYTES + 1))},
                headers=headers,
            )
            assert too_big.status_code == 413
            assert too_big.headers["content-type"].startswith("application/problem+json")
            assert str(MAX_UPLOAD_BYTES) in too_big.json()["detail"]

            far_too_big = await client.post(
                f"{session}/upload",
                files={"file": ("big.bin", b"x" * (MAX_UPLOAD_BYTES * 2))},
                headers=headers,
            )
            assert far_too_big.status_code == 413

            nameless = await client.post(
                f"{session}/upload", files={"file": ("..", b"data")}, headers=headers
            )
            assert nameless.status_code == 422
            assert nameless.json()["errors"][0]["field"] == "file"

            no_file = await client.post(
                f"{session}/upload", files={"other": ("a.txt", b"data")}, headers=headers
            )
            assert no_file.status_code in (400, 422)
            assert no_file.headers["content-type"].startswith("application/problem+json")

            anonymous = await client.post(f"{session}/upload", files={"file": ("a.txt", b"data")})
            assert anonymous.status_code == 401

            other_org, other_user = uuid.uuid4(), uuid.uuid4()
            await seed_async(pg_urls.owner, other_org, other_user, "Upload Neighbour Org")
            neighbour = stack.headers(org_id=other_org, user_id=other_user)
            foreign = await client.post(
                f"{session}/upload", files={"file": ("a.txt", b"data")}, headers=neighbour
            )
            assert foreign.status_code == 404
            assert json.loads(foreign.text)["detail"] == "session not found"

            assert input_length(stack, created["id"]) == before
        finally:
            await client.delete(session, headers=headers)

        await read_events(
            client, created["events_url"], headers, until=lambda sse: sse.event == "session_ended"
        )
        ended = await client.post(f"{session}/upload", files={"file": ("a.txt", b"data")}, headers=headers)
        assert ended.status_code == 409
