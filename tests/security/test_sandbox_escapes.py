"""A hostile agent in org A's session tries every way out of its sandbox, on a live stack (real
PostgreSQL, Redis, worker, PTYs), and each fails while its own workspace still works.

The agent is a `custom` session running bash in a real PTY; the shell runs
``tests/security/escape_probe.py`` (a stand-in for any coding agent's shell tool) against org B's
live session next door, the worker, Redis, PostgreSQL, the metadata address and another loopback
service standing for another session's router.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.fixtures.stack import REPO, Stack, recording_client, seed_async
from tests.test_skeleton_e2e import ECHO
from tests.waiting import until
from workers.sandbox import sandbox_uid

pytestmark = pytest.mark.timeout(240)

NPROC = 48
HOSTILE_SERVER = str(REPO / "tests" / "security" / "hostile_mcp_server.py")
STACK_ENV = {
    "AGENTAPI_CUSTOM_AGENTS": json.dumps(
        {
            "shell": ["/bin/bash", "--norc", "--noprofile", "-i"],
            "echo": [sys.executable, str(REPO / "tests" / "agents" / "echo_agent.py")],
        }
    ),
    "AGENTAPI_AGENT_RLIMIT_NPROC": str(NPROC),
    "AGENTAPI_MCP_STDIO_ALLOWLIST": json.dumps(["python3", [sys.executable, HOSTILE_SERVER]]),
}
RESPONSES: list[bytes] = []


async def started(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]) -> str:
    response = await client.post("/api/v1/sessions", json=body, headers=headers)
    assert response.status_code == 202, response.text
    session_id = str(response.json()["id"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = (await client.get(f"/api/v1/sessions/{session_id}/status", headers=headers)).json()
        if status.get("status") == "stable":
            return session_id
        await asyncio.sleep(0.3)
    raise TimeoutError(f"session {session_id} never became stable")


def agent_pid(session_id: str) -> int:
    """The host pid of a session's sandboxed agent (found by its uid)."""
    uid = sandbox_uid(session_id, "agent")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"Uid:\t{uid}\t" in status:
                return int(entry.name)
    raise LookupError(f"no process of session {session_id}")


async def test_a_hostile_shell_reaches_nothing_outside_its_own_workspace(pg_urls, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    other_org, other_user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, other_org, other_user, "Org B")
    b_headers = stack.headers(org_id=other_org, user_id=other_user)
    async with recording_client(stack, RESPONSES) as client:
        b_session = await started(client, b_headers, ECHO)
        root = Path(stack.env["AGENTAPI_WORKSPACE_ROOT"])
        b_workspace = root / str(other_org) / str(other_user) / b_session
        (b_workspace / "b-secret.txt").write_text("org B file")
        b_router = root / ".private" / b_session / ".claude-code-router" / "config.json"
        b_router.parent.mkdir(parents=True, exist_ok=True)
        b_router.write_text('{"Providers": [{"api_key": "org-b-provider-key"}]}')
        b_pid, worker_pid = agent_pid(b_session), stack.workers[0].pid
        with socket.socket() as router_b:
            # Another session's router (or any platform service) on a loopback port.
            router_b.bind(("127.0.0.1", 0))
            router_b.listen()
            targets = {
                "read": {
                    "org B file": str(b_workspace / "b-secret.txt"),
                    "org B gateway token": str(b_workspace / ".home" / ".agentapi" / "mcp.json"),
                    "org B router config": str(b_router),
                    "the worker environ": f"/proc/{worker_pid}/environ",
                },
                "pids": {"org B agent": b_pid, "the worker": worker_pid},
                "ports": {"redis": 6379, "postgres": 5432, "another router": router_b.getsockname()[1]},
                "write": {
                    "the repo": str(REPO / "escaped.txt"),
                    "org B workspace": str(b_workspace / "escaped.txt"),
                    "the workspace root": str(root / "escaped.txt"),
                    "/etc": "/etc/escaped",
                },
                "forks": NPROC * 3,
            }
            a_session = await started(
                client, stack.headers(), {"agent_type": "custom", "custom_agent": "shell"}
            )
            a_workspace = root / str(stack.org_id) / str(stack.user_id) / a_session
            probe = REPO / "tests" / "security" / "escape_probe.py"
            command = f"{sys.executable} {probe} '{json.dumps(targets)}' > report.json"
            sent = await client.post(
                f"/api/v1/sessions/{a_session}/message",
                json={"content": command, "type": "user"},
                headers=stack.headers(),
            )
            assert sent.status_code == 200, sent.text
            report_file = a_workspace / "report.json"
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and not (
                report_file.exists() and report_file.read_text().strip()
            ):
                await asyncio.sleep(0.5)
            if not (report_file.exists() and report_file.read_text().strip()):
                screen = await client.get(f"/api/v1/sessions/{a_session}/messages", headers=stack.headers())
                raise AssertionError(f"the probe wrote no report; the session shows {screen.text}")
            report = json.loads(report_file.read_text())

        escapes = {name: outcome for name, outcome in report["attempts"].items() if outcome["succeeded"]}
        forked = escapes.pop("fork past the process limit", None)
        assert escapes == {}, escapes
        assert forked is None or int(str(forked["detail"])) < NPROC
        # Its own workspace works, as its own uid; it sees only its own processes (bash, the probe).
        assert report["own"] == "escaped"
        assert report["uid"] == sandbox_uid(a_session, "agent")
        assert not any("echo_agent" in line or "api.cli" in line for line in report["visible"].values())
        assert len(report["visible"]) <= 4, report["visible"]
        # Nothing landed outside, and org B's agent is alive.
        assert not (REPO / "escaped.txt").exists() and not (b_workspace / "escaped.txt").exists()
        os.kill(b_pid, 0)  # raises if the probe managed to kill it

        # After the sessions end, no gateway token or router config is left on disk.
        for session_id, headers in ((a_session, stack.headers()), (b_session, b_headers)):
            await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)

        # The row says "ended" only after the host removed the token's copies (the private
        # directory goes first, when the agent stops).
        async def b_status() -> str:
            answer = await client.get(f"/api/v1/sessions/{b_session}", headers=b_headers)
            return str(answer.json()["status"])

        async def b_over() -> bool:
            return await b_status() in ("ended", "failed")

        await until(b_over, 30, "org B's session ended")
        assert await b_status() == "ended"
        assert not (root / ".private" / b_session).exists()
        assert not (b_workspace / ".home" / ".agentapi" / "mcp.json").exists()
        # Directories from the workspace root down are the worker's alone.
        for level in (root, root / str(other_org), root / str(other_org) / str(other_user)):
            assert level.stat().st_mode & 0o777 == 0o700, level


async def test_stdio_code_flags_are_refused_and_an_allowed_server_cannot_read_the_worker(
    stack: Stack,
) -> None:
    stack.start_worker("tools", "audit")
    async with recording_client(stack, RESPONSES) as client:
        refused = await client.post(
            "/api/v1/mcp/configurations",
            json={"name": "peek", "transport": "stdio", "command": "python3", "args": ["-c", "print(1)"]},
            headers=stack.headers(),
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert [error["field"] for error in refused.json()["errors"]] == ["args[0]"]

        hostile = {
            "name": "hostile",
            "transport": "stdio",
            "command": sys.executable,
            "args": [HOSTILE_SERVER],
        }
        kept_out = await client.post("/api/v1/mcp/configurations", json=hostile, headers=stack.headers())
        assert kept_out.status_code == 403, "members add stdio servers only where an admin allows it"
        assert "members_may_add_stdio" in kept_out.json()["detail"]
        not_a_flag = await client.put(
            "/api/v1/settings",
            json={"settings": {"members_may_add_stdio": "yes"}},
            headers=stack.headers(role="admin"),
        )
        assert not_a_flag.status_code == 422, not_a_flag.text
        assert not_a_flag.json()["errors"][0]["field"] == "settings.members_may_add_stdio"
        await asyncio.to_thread(stack.let_members_add_stdio)

        created = await client.post("/api/v1/mcp/configurations", json=hostile, headers=stack.headers())
        assert created.status_code == 201, created.text
        tested = await client.post(
            "/api/v1/mcp/test", json={"config_id": created.json()["id"]}, headers=stack.headers()
        )
        assert tested.status_code == 200, tested.text
        (tool,) = tested.json()["result"]["tools"]
        seen = tool["description"]
        assert "PermissionError" in seen or "FileNotFoundError" in seen, seen
        for secret in (stack.env["AGENTAPI_JWT_SECRET"], stack.env["AGENTAPI_ENCRYPTION_KEYS"], "AGENTAPI_"):
            assert secret not in seen
