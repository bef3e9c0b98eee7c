"""``agentapi dev``: the whole system on embedded defaults, in one process group.

Same code paths as production; only the backends differ: a SQLite file instead of PostgreSQL and
fakeredis's TCP server instead of Redis (Dramatiq's Lua scripts run on it through lupa). The
ingress and the worker pools run as child processes exactly as ``agentapi serve`` and
``agentapi worker`` would.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fakeredis import TcpFakeServer

from api.tokens import mint_token
from schemas.crypto import KeyRing
from schemas.settings import Settings, load_settings
from services.sessions.lifecycle import end_sessions_of_last_run

DEV_ORG_ID = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
DEV_USER_ID = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
DEV_TOKEN_TTL = 7 * 24 * 3600
# How long the printed console link signs in (once).
CONSOLE_LINK_TTL = 24 * 3600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_embedded_redis() -> tuple[TcpFakeServer, int]:
    port = _free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="embedded-redis", daemon=True).start()
    return server, port


def _dev_file(data_dir: Path, name: str, make: Callable[[], str]) -> str:
    """A secret generated once per data dir, so tokens and stored secrets survive a restart."""
    path = data_dir / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def dev_custom_agents() -> dict[str, list[str]]:
    """In a checkout, the echo test agent is allowlisted as `echo` so dev works without any agent CLI."""
    echo = Path(__file__).resolve().parents[1] / "tests" / "agents" / "echo_agent.py"
    return {"echo": [sys.executable, str(echo)]} if echo.exists() else {}


def dev_environment(data_dir: Path, redis_port: int) -> dict[str, str]:
    """The settings every dev process gets; explicit AGENTAPI_* values in the caller's env win."""
    defaults = {
        "AGENTAPI_ENVIRONMENT": "development",
        "AGENTAPI_LOG_FORMAT": "text",
        "AGENTAPI_DATABASE_URL": f"sqlite+aiosqlite:///{(data_dir / 'dev.db').resolve()}",
        "AGENTAPI_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "AGENTAPI_JWT_SECRET": _dev_file(data_dir, "jwt-secret", lambda: secrets.token_urlsafe(48)),
        "AGENTAPI_ENCRYPTION_KEYS": _dev_file(
            data_dir, "encryption-keys", lambda: f"dev:{KeyRing.generate_key()}"
        ),
        "AGENTAPI_WORKSPACE_ROOT": str((data_dir / "workspaces").resolve()),
        "AGENTAPI_CUSTOM_AGENTS": json.dumps(dev_custom_agents()),
    }
    env = dict(os.environ)
    for key, value in defaults.items():
        env.setdefault(key, value)
    # The embedded Redis only exists in this process group: never inherit a real one by accident.
    env["AGENTAPI_REDIS_URL"] = defaults["AGENTAPI_REDIS_URL"]
    env.pop("REDIS_URL", None)
    return env


def _settings_from(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def issue_console_login(redis_url: str, prefix: str, token: str, ttl_seconds: int = CONSOLE_LINK_TTL) -> str:
    """A one-time code the console trades for ``token`` (``POST /api/v1/console/login``), so the printed
    link carries no token and stops working once used."""
    import redis

    from events.streams import Names

    code = secrets.token_urlsafe(32)
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(Names(prefix).console_login(code), token, ex=ttl_seconds)
    finally:
        client.close()
    return code


def _wait_ready(port: int, procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            raise SystemExit("agentapi dev: a child process exited during start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("agentapi dev: the ingress did not become ready")


def run_dev(host: str, port: int, data_dir: str) -> int:
    from schemas.migrate import upgrade
    from schemas.seed import seed_tenant

    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    redis_server, redis_port = _start_embedded_redis()
    env = dev_environment(root, redis_port)
    settings = _settings_from(env)
    asyncio.run(upgrade(settings))
    asyncio.run(
        seed_tenant(
            settings, org_id=DEV_ORG_ID, org_name="Dev Org", user_id=DEV_USER_ID, email="dev@example.com"
        )
    )
    # The embedded Redis starts empty: no session left open by the last run has a host any more.
    asyncio.run(end_sessions_of_last_run(settings))

    cli = [sys.executable, "-m", "api.cli"]
    procs = [
        subprocess.Popen([*cli, "worker", "--threads", "4"], env=env),
        subprocess.Popen([*cli, "serve", "--host", host, "--port", str(port)], env=env),
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_ready(port, procs)
        assert settings.jwt_secret is not None
        token = mint_token(
            settings.jwt_secret.get_secret_value(),
            user_id=DEV_USER_ID,
            org_id=DEV_ORG_ID,
            role="owner",
            audience=settings.jwt_audience,
            ttl_seconds=DEV_TOKEN_TTL,
            email="dev@example.com",
        )
        base = f"http://{host}:{port}"
        code = issue_console_login(settings.redis_url, settings.redis_prefix, token)
        example = json.dumps({"agent_type": "custom", "custom_agent": "echo", "prompt": "hello"})
        print(
            f"\nconsole (signs you in once): {base}/console#login={code}\n\n"
            f"agentapi dev is up at {base}  (SQLite {settings.database_url}, embedded Redis :{redis_port})\n"
            f"token (owner of Dev Org, 7 days):\n{token}\n\n"
            f"try:\n  curl -s -X POST {base}/api/v1/sessions -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d '{example}'\n"
            f"  curl -sN {base}/api/v1/sessions/<id>/events -H 'Authorization: Bearer {token}'\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping and all(proc.poll() is None for proc in procs):
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        redis_server.shutdown()
        redis_server.server_close()
    return 0
