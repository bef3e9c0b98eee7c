"""Finding 8: an upload named 200 times "é" (400 bytes) got 200, then the session host hit
ENAMETOOLONG and crash-looped the session; and the upload followed a symlink planted at
``uploads/.evil.partial``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx

from tests.fixtures.stack import Stack
from tests.test_skeleton_e2e import ECHO, agent_said, read_events


def _regular_content(path: Path) -> bytes | None:
    """The file's bytes once it is a regular file (not missing, not a link)."""
    return path.read_bytes() if path.exists() and not path.is_symlink() else None


async def _placed(path: Path) -> bytes:
    for _ in range(300):
        content = await asyncio.to_thread(_regular_content, path)
        if content is not None:
            return content
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} was never placed")


async def test_long_names_fit_and_planted_links_are_not_followed(stack: Stack, tmp_path: Path) -> None:
    headers = stack.headers()
    outside = tmp_path / "outside.txt"
    await asyncio.to_thread(outside.write_bytes, b"must stay")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "hi"}, headers=headers)
        ).json()
        session = f"/api/v1/sessions/{created['id']}"
        try:
            await read_events(client, created["events_url"], headers, until=agent_said("echo: hi"))
            long_name = "é" * 200 + ".txt"
            uploaded = await client.post(
                f"{session}/upload", files={"file": (long_name, b"long")}, headers=headers
            )
            assert uploaded.status_code == 200, uploaded.text
            path = Path(uploaded.json()["filePath"])
            assert len(path.name.encode()) <= 200 and path.name.endswith(".txt")
            assert await _placed(path) == b"long"

            # The agent owns its workspace: it plants a link where the host writes its partial file.
            os.symlink(outside, path.parent / ".evil.partial")
            os.symlink(outside, path.parent / "evil")
            uploaded = await client.post(
                f"{session}/upload", files={"file": ("evil", b"replaced")}, headers=headers
            )
            assert uploaded.status_code == 200
            assert await _placed(Path(uploaded.json()["filePath"])) == b"replaced"
            assert await asyncio.to_thread(outside.read_bytes) == b"must stay"
            status = (await client.get(f"{session}/status", headers=headers)).json()
            assert status["status"] in ("running", "stable")
        finally:
            await client.delete(session, headers=headers)
