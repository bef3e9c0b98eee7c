"""workers/sandbox.py on real processes: what a sandboxed program sees, reaches and cannot touch."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from schemas.settings import Settings
from services.sandbox_probe import probe
from workers.sandbox import Endpoint, Sandbox, SandboxUnavailable, forwarded_endpoints, give_to, sandbox_uid

pytestmark = pytest.mark.skipif(probe() is not None, reason=f"no sandbox here: {probe()}")

PROGRAM = """
import json, os, socket
out = {"uid": os.getuid(), "pids": sorted(p for p in os.listdir("/proc") if p.isdigit())}
for name, port in (("forwarded", %d), ("other", %d)):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            out[name] = s.recv(5).decode()
    except OSError as exc:
        out[name] = type(exc).__name__
for path in ("/root/.bashrc", "/etc/shadow", "%s"):
    out[path] = os.path.exists(path)
with open("mine.txt", "w") as f:
    f.write("ok")
print(json.dumps(out))
"""


async def serve(answer: bytes) -> tuple[asyncio.Server, int]:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_sandboxed_program_reaches_only_its_forwards_and_its_workspace(tmp_path: Path) -> None:
    allowed, allowed_port = await serve(b"hello")
    other, other_port = await serve(b"nope!")
    secret = tmp_path / "neighbour" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("x")
    workspace = tmp_path / "ws"
    workspace.mkdir(mode=0o700)
    uid = sandbox_uid("unit")
    give_to(workspace, uid)
    sandbox = Sandbox(
        "agent", uid, tmp_path / "etc", (workspace,), endpoints=(Endpoint("127.0.0.1", allowed_port),)
    )
    argv = sandbox.wrap([sys.executable, "-c", PROGRAM % (allowed_port, other_port, secret)], workspace)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workspace,
        stdout=asyncio.subprocess.PIPE,
        pass_fds=sandbox.pass_fds,
        env={"PATH": "/usr/bin"},
    )
    await sandbox.attach()
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    await sandbox.close()
    allowed.close()
    other.close()
    seen = json.loads(out)
    assert seen["uid"] == uid
    assert seen["forwarded"] == "hello"
    assert seen["other"] == "ConnectionRefusedError"
    assert seen["/root/.bashrc"] is False and seen["/etc/shadow"] is False and seen[str(secret)] is False
    assert len(seen["pids"]) <= 3  # bwrap's init, the program (and nothing of the host)
    assert (workspace / "mine.txt").read_text() == "ok"


def test_urls_naming_the_platforms_redis_or_postgres_are_refused() -> None:
    settings = Settings(_env_file=None, environment="test", jwt_secret="x" * 32)  # type: ignore[call-arg]
    with pytest.raises(SandboxUnavailable):
        forwarded_endpoints(["http://127.0.0.1:6379/"], settings)
    with pytest.raises(SandboxUnavailable):
        forwarded_endpoints(["http://localhost:6379/x"], settings)
    found = forwarded_endpoints(
        ["https://api.anthropic.com/v1", "not a url", "http://127.0.0.1:8000/mcp"], settings, {8000}
    )
    assert found == (Endpoint("api.anthropic.com", 443),)
    # A tenant's URL is checked at each connection, even where the platform names the same host and port.
    found = forwarded_endpoints(
        ["https://oauth2.googleapis.com", "https://api.example.com"],
        settings,
        tenant_urls=("https://api.example.com/v1/chat", "http://provider.example:8080/v1"),
    )
    assert found == (
        Endpoint("oauth2.googleapis.com", 443),
        Endpoint("api.example.com", 443, "https"),
        Endpoint("provider.example", 8080, "http"),
    )
    with pytest.raises(SandboxUnavailable):
        forwarded_endpoints([], settings, tenant_urls=("http://localhost:6379/",))


def test_session_uids_are_stable_distinct_and_high() -> None:
    assert sandbox_uid("s1") == sandbox_uid("s1")
    assert len({sandbox_uid("s1"), sandbox_uid("s2"), sandbox_uid("s1", "ccr")}) == 3
    assert sandbox_uid("s1") > 0x1000_0000
