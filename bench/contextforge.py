"""IBM's MCP ContextForge gateway in front of an MCP server, for the gateway bench to compare with.

An optional extra, in an environment of its own (its dependencies pin versions this project does
not use): ``python3 -m venv /opt/contextforge && /opt/contextforge/bin/pip install
mcp-contextforge-gateway`` (or ``AGENTAPI_BENCH_CONTEXTFORGE`` naming another venv). Run as shipped:
SQLite, authentication on (a JWT signed with its secret), its in-memory cache, one uvicorn process,
its rate limits off.
The upstream is registered as a gateway with its bearer token, and its ``echo`` tool is put in a
virtual server whose Streamable HTTP endpoint the bench calls.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fixtures.stack import free_port, stop, wait_answering

VENV = Path(os.environ.get("AGENTAPI_BENCH_CONTEXTFORGE", "/opt/contextforge"))
INSTALL_HINT = (
    "python3 -m venv /opt/contextforge && /opt/contextforge/bin/pip install mcp-contextforge-gateway"
)
START_SECONDS = 180.0


@dataclass(frozen=True)
class ContextForge:
    url: str  # the virtual server's Streamable HTTP endpoint
    token: str
    tool: str
    version: str


def installed() -> bool:
    return (VENV / "bin" / "mcpgateway").exists()


def version() -> str:
    out = subprocess.run(
        [str(VENV / "bin" / "pip"), "show", "mcp-contextforge-gateway"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version:"))


@contextmanager
def contextforge(upstream_url: str, upstream_token: str) -> Iterator[ContextForge]:
    """ContextForge running on a free port with ``upstream_url``'s ``echo`` tool behind it."""
    port = free_port()
    secret = secrets.token_urlsafe(40)
    with tempfile.TemporaryDirectory(prefix="agentapi-bench-contextforge-") as home:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": home,
            "DATABASE_URL": f"sqlite:///{home}/mcp.db",
            "JWT_SECRET_KEY": secret,
            "AUTH_REQUIRED": "true",
            "BASIC_AUTH_PASSWORD": secrets.token_urlsafe(24),
            "PLATFORM_ADMIN_PASSWORD": f"Bench-{secrets.token_urlsafe(18)}",
            "CACHE_TYPE": "memory",
            "MCPGATEWAY_UI_ENABLED": "false",
            "MCPGATEWAY_ADMIN_API_ENABLED": "false",
            # The upstream is the test server on 127.0.0.1, which its SSRF guard refuses by default.
            "SSRF_ALLOW_LOCALHOST": "true",
            # Its defaults allow 100 tool calls a minute per user: a bench is not abuse.
            "RATE_LIMITING_ENABLED": "false",
            "TOOL_RATE_LIMIT": "1000",
            "LOG_LEVEL": "ERROR",
        }
        with open(Path(home) / "contextforge.log", "wb") as log:
            proc = subprocess.Popen(
                [str(VENV / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)],
                cwd=home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_answering(f"{base}/health", timeout=START_SECONDS, process=proc, status=200)
            token = (
                subprocess.run(
                    [
                        str(VENV / "bin" / "python"),
                        "-m",
                        "mcpgateway.utils.create_jwt_token",
                        "--username=admin@example.com",
                        "--exp=120",
                        "--admin",
                        f"--secret={secret}",
                    ],
                    env=env,
                    cwd=home,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            yield _registered(base, token, upstream_url, upstream_token)
        finally:
            stop(proc)


def _registered(base: str, token: str, upstream_url: str, upstream_token: str) -> ContextForge:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        http.post(
            "/gateways",
            json={
                "name": "bench",
                "url": upstream_url,
                "transport": "STREAMABLEHTTP",
                "auth_type": "bearer",
                "auth_token": upstream_token,
            },
        ).raise_for_status()
        tools = http.get("/tools").raise_for_status().json()
        echo = next(tool for tool in tools if tool["originalName"] == "echo")
        server = http.post("/servers", json={"server": {"name": "bench", "associated_tools": [echo["id"]]}})
        server.raise_for_status()
        return ContextForge(
            f"{base}/servers/{server.json()['id']}/mcp", token, server.json()["associatedTools"][0], version()
        )
