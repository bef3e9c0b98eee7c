"""Published coder/agentapi clients, unchanged, against one of our sessions (issue 22, "clients
unchanged"): each is installed from the package registry into a virtualenv of its own and given a
session client key's URL, ``http://KEY@127.0.0.1:PORT``, whose userinfo httpx sends as
``Authorization: Basic``; the key's session answers at the root paths they build.

- PyPI ``cyberian`` 0.2.2: ``cyberian message … --sync`` posts ``/message``, polls ``/status`` until
  stable and prints the last agent message of ``/messages``.
- PyPI ``mcp-agentapi`` 1.0.0: its ``AgentAPIClient`` (``src/api_client.py``) drives ``status``,
  ``messages``, ``message`` (user and raw), ``events``, ``internal/screen`` and ``openapi.json``.
  The published package is broken upstream in two ways this test works around without touching
  what it sends: it pins ``mcp[cli]==1.4.1``, whose FastMCP imports a pydantic internal that
  pydantic 2.11 removed (so the virtualenv gets ``pydantic<2.11``), and neither its wheel nor its
  sdist ships the ``src.utils`` package that ``src/api_client.py`` imports
  (``src.utils.error_handler``: ``create_error_response``, ``handle_exception``,
  ``add_cors_headers``). The test writes a stand-in for that module into the virtualenv
  (``ERROR_HANDLER`` below): plain functions that build dictionaries, never called on the paths
  driven here and doing no HTTP, so every request is the published client's own.

The virtualenvs are kept in pytest's cache, keyed by the requirements and the interpreter, so a rerun
reuses them. A fresh checkout (CI) installs both, which takes most of this module's time (pip's
resolver waits on the index, package after package): both installs start with the module, beside
each other and the stack's boot. When an install fails because the package index cannot be reached
at all, the tests skip, saying so; any other install failure fails them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.stack import Stack
from tests.test_skeleton_e2e import ECHO
from tests.waiting import until

# Installs are slow the first time only (the virtualenvs are cached); marked slow so that the fast
# local subset leaves them out while the README's full test command runs them.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CYBERIAN = ["cyberian==0.2.2"]
MCP_AGENTAPI = ["mcp-agentapi==1.0.0", "pydantic<2.11"]
INSTALL_TIMEOUT_SECONDS = 600
# The module mcp-agentapi 1.0.0 imports but does not ship (src/utils/error_handler.py).
ERROR_HANDLER = '''\
"""Stand-in for src.utils.error_handler, which mcp-agentapi 1.0.0 imports but does not ship
(written by agentapi's tests/test_published_clients.py). Pure functions: no HTTP."""

from typing import Any, Dict, Optional

from src.constants import CORS_HEADERS


def create_error_response(
    message: str, status_code: int = 500, details: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    return {"error": message, "status_code": status_code, "details": details or {}}


def handle_exception(exc: BaseException) -> Dict[str, Any]:
    return create_error_response(str(exc), getattr(exc, "status_code", None) or 500)


def add_cors_headers(headers: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    return {**(headers or {}), **CORS_HEADERS}
'''

# Run in mcp-agentapi's virtualenv: the published AgentAPIClient against the key's URL.
MCP_SCRIPT = """\
import asyncio, json, sys

import httpx

from src.api_client import AgentAPIClient
from src.models import MessageType


async def main(url: str) -> None:
    async with httpx.AsyncClient() as http:
        client = AgentAPIClient(http, url)
        out = {"status": await client.get_status()}
        out["sent"] = await client.send_message("hello from mcp-agentapi", MessageType.USER)
        events = client.stream_events(reconnect=False)
        while True:
            event = await events.__anext__()
            if event["type"] == "message_update" and event["data"]["message"] == "echo: hello from mcp-agentapi":
                break
        await events.aclose()
        out["event"] = event
        while (await client.get_status())["status"] != "stable":
            await asyncio.sleep(0.1)
        out["messages"] = await client.get_messages()
        out["raw"] = await client.send_message("typed", MessageType.RAW)
        out["screen"] = await client.get_screen()
        out["paths"] = sorted((await client.get_openapi_schema())["paths"])
    print(json.dumps(out))


asyncio.run(main(sys.argv[1]))
"""


def client_venv(root: Path, name: str, requirements: list[str]) -> Path:
    """A virtualenv with ``requirements`` installed from the registry, reused when it exists."""
    key = hashlib.sha256(json.dumps([requirements, sys.version]).encode()).hexdigest()[:12]
    venv = root / f"{name}-{key}"
    if (venv / "complete").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    # No pip of its own (ensurepip takes seconds): this interpreter's pip installs into it. No
    # byte-compiling either: a client imports a fraction of what is installed, once.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-compile", *requirements],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
    )
    if installed.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        index = package_index()
        if not reachable(index):
            pytest.skip(
                f"the package registry ({index}) is unreachable: {requirements[0]} cannot be installed"
            )
        output = installed.stdout + installed.stderr
        pytest.fail(f"pip install {' '.join(requirements)} failed:\n{output[-4000:]}")
    (venv / "complete").touch()
    return venv


def package_index() -> str:
    """The index pip installs from here: as configured, else pip's own default."""
    from pip._internal.models.index import PyPI

    configured = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    ).stdout.strip()
    return os.environ.get("PIP_INDEX_URL") or configured or PyPI.simple_url


def reachable(index: str) -> bool:
    try:
        httpx.get(index, timeout=15, follow_redirects=True)
    except httpx.TransportError:
        return False
    return True


def add_stand_in(venv: Path) -> None:
    """Put the stand-in ``src/utils/error_handler.py`` beside the published ``src`` package."""
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    utils = Path(site) / "src" / "utils"
    utils.mkdir(exist_ok=True)
    (utils / "__init__.py").touch()
    (utils / "error_handler.py").write_text(ERROR_HANDLER)


@pytest.fixture(scope="module", autouse=True)
def venvs(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Path]]]:
    """Each client's virtualenv by name, being installed: autouse, so the installs run while the
    stack boots (a module fixture the tests name too); a test waits for its own."""
    cache = getattr(pytestconfig, "cache", None)
    root = cache.mkdir("published-client-venvs") if cache else tmp_path_factory.mktemp("venvs")
    with ThreadPoolExecutor(2) as pool:
        yield {
            "cyberian": pool.submit(client_venv, root, "cyberian", CYBERIAN),
            "mcp-agentapi": pool.submit(client_venv, root, "mcp-agentapi", MCP_AGENTAPI),
        }


@pytest.fixture
async def key_url(stack: Stack) -> AsyncIterator[tuple[str, str]]:
    """A live echo-agent session's client key URL, and the host part a client is given; the
    session is ended afterwards (it holds a sessions-worker thread)."""
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post("/api/v1/sessions", json=ECHO, headers=headers)
        assert created.status_code == 202, created.text
        session = f"/api/v1/sessions/{created.json()['id']}"

        async def stable() -> bool:
            return (await client.get(f"{session}/status", headers=headers)).json()["status"] == "stable"

        await until(stable, 60, "the echo agent is stable")
        minted = await client.post(f"{session}/client-keys", headers=headers)
        assert minted.status_code == 201, minted.text
        url = minted.json()["url"]
        try:
            yield url, url.removeprefix("http://").rpartition(":")[0]
        finally:
            await client.delete(session, headers=headers)


async def test_cyberian_message_sync_prints_the_agents_reply(
    stack: Stack, venvs: dict[str, Future[Path]], key_url: tuple[str, str]
) -> None:
    venv = await asyncio.wrap_future(venvs["cyberian"])
    url, host = key_url
    port = url.rpartition(":")[2]
    argv = [str(venv / "bin" / "cyberian"), "message", "hello from cyberian", "--sync", "--host", host]
    argv += ["--port", port, "--poll-interval", "0.2", "--timeout", "60"]
    result = await asyncio.to_thread(
        subprocess.run,
        argv,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "echo: hello from cyberian"


async def test_mcp_agentapi_client_drives_the_session(
    stack: Stack, venvs: dict[str, Future[Path]], key_url: tuple[str, str]
) -> None:
    venv = await asyncio.wrap_future(venvs["mcp-agentapi"])
    await asyncio.to_thread(add_stand_in, venv)
    python = str(venv / "bin" / "python")
    script = venv / "drive_session.py"
    script.write_text(MCP_SCRIPT)

    url, _ = key_url
    result = await asyncio.to_thread(
        subprocess.run, [python, str(script), url], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"]["status"] == "stable" and out["status"]["agent_type"] == "custom"
    assert out["sent"] == {"ok": True} and out["raw"] == {"ok": True}
    assert out["event"]["type"] == "message_update" and out["event"]["id"]
    assert [m["content"] for m in out["messages"]["messages"][1:]] == [
        "hello from mcp-agentapi",
        "echo: hello from mcp-agentapi",
    ]
    assert "echo: hello from mcp-agentapi" in out["screen"]
    # The real document (the client falls back to a built-in one when it cannot read it).
    assert {"/status", "/api/v1/sessions/{session_id}/client-keys"} <= set(out["paths"])
