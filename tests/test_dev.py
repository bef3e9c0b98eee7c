"""`agentapi dev` from a clean environment: embedded Redis, SQLite, every pool, a printed token
that works, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.stack import REPO, free_port
from tests.waiting import until_sync

pytestmark = pytest.mark.timeout(180)


def processes_of(group: int, workspace: Path) -> list[str]:
    """Live processes in the dev process group, or working inside its data dir (agents run in their own sessions)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == group:
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            in_group = os.getpgid(int(entry.name)) == group
            in_workspace = str(workspace) in os.readlink(entry / "cwd")
        except (OSError, IndexError):
            continue
        if state != "Z" and (in_group or in_workspace):
            found.append((entry / "cmdline").read_text().replace("\0", " "))
    return found


def start_dev(
    tmp_path: Path, port: int, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`agentapi dev` on ``tmp_path / "data"``, once it printed its token: (process, token, output)."""
    # Nothing of the test run's settings: no database, Redis or secret in the environment.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", **(extra_env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "dev", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    # Drain the output all along: a full pipe would stall the dev processes' logging.
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    token = None
    deadline = time.monotonic() + 90
    while token is None and time.monotonic() < deadline and proc.poll() is None:
        lines = list(output)
        token = next(
            (lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if line.startswith("token (")),
            None,
        )
        time.sleep(0.1)
    if token is None:
        stop_dev(proc)
        raise AssertionError("".join(output[-40:]))
    return proc, token, output


def stop_dev(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_dev_runs_a_session_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc, token, output = start_dev(tmp_path, port)
    try:
        assert len(processes_of(proc.pid, tmp_path)) >= 2  # ingress and workers
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}"
        created = httpx.post(
            f"{base}/api/v1/sessions",
            json={"agent_type": "custom", "custom_agent": "echo", "prompt": "hello dev"},
            headers=headers,
            timeout=30,
        )
        assert created.status_code == 202, created.text
        session_id = created.json()["id"]
        reply = None
        for _ in range(120):
            messages = httpx.get(
                f"{base}/api/v1/sessions/{session_id}/messages", headers=headers, timeout=10
            ).json()
            reply = next(
                (m["content"] for m in messages["messages"] if m["content"] == "echo: hello dev"), None
            )
            if reply:
                break
            time.sleep(0.25)
        assert reply == "echo: hello dev"
        # The console link comes first in what dev prints (child processes' logs may precede it); its
        # one-time code signs the dev owner in once.
        lines = list(output)
        first = next(i for i, line in enumerate(lines) if line.startswith("console ("))
        assert first < next(i for i, line in enumerate(lines) if line.startswith("agentapi dev is up"))
        link = re.fullmatch(rf"console \(signs you in once\): {base}/console#login=([\w-]+)\n", lines[first])
        assert link, lines[first]
        traded = httpx.post(f"{base}/api/v1/console/login", json={"code": link.group(1)}, timeout=10)
        assert traded.status_code == 200, traded.text
        assert httpx.get(
            f"{base}/api/v1/sessions",
            headers={"Authorization": f"Bearer {traded.json()['token']}"},
            timeout=10,
        ).is_success
        again = httpx.post(f"{base}/api/v1/console/login", json={"code": link.group(1)}, timeout=10)
        assert again.status_code == 404
        assert again.headers["content-type"].startswith("application/problem+json")
        assert re.search(r"sqlite", "".join(output)) and re.search(r"embedded Redis", "".join(output))

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        until_sync(lambda: processes_of(proc.pid, tmp_path) == [], 10, "every dev process ended")
    finally:
        stop_dev(proc)


def wait_stable(base: str, session_id: str, headers: dict[str, str]) -> dict[str, object]:
    for _ in range(600):
        status = httpx.get(f"{base}/api/v1/sessions/{session_id}/status", headers=headers, timeout=10).json()
        if status["status"] == "stable":
            return status  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"session {session_id} never read stable")


def test_sessions_open_when_dev_restarts_end_with_host_lost_and_free_the_quota(tmp_path: Path) -> None:
    """Its Redis lives in memory, so a restart loses every host: afterwards each session is ended
    with host_lost (status stable, messages refused with 410), DELETE answers, the quota is free."""
    port = free_port()
    # The stacks' settle time: waiting for stable is most of what each phase does besides booting.
    quota = {"AGENTAPI_MAX_SESSIONS_PER_USER": "2", "AGENTAPI_AGENT_SETTLE_SECONDS": "0.5"}
    echo = {"agent_type": "custom", "custom_agent": "echo"}
    base = f"http://127.0.0.1:{port}"
    proc, token, _ = start_dev(tmp_path, port, quota)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        ids = [
            httpx.post(f"{base}/api/v1/sessions", json=echo, headers=headers, timeout=30).json()["id"]
            for _ in range(2)
        ]
        for session_id in ids:
            wait_stable(base, session_id, headers)
        assert (
            httpx.post(f"{base}/api/v1/sessions", json=echo, headers=headers, timeout=30).status_code == 429
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        stop_dev(proc)

    proc, token, _ = start_dev(tmp_path, port, quota)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        for session_id in ids:
            status = wait_stable(base, session_id, headers)
            assert (status["session_status"], status["end_reason"]) == ("ended", "host_lost")
            url = f"{base}/api/v1/sessions/{session_id}"
            sent = httpx.post(f"{url}/message", json={"content": "still there?"}, headers=headers, timeout=10)
            assert sent.status_code == 410 and sent.json()["end_reason"] == "host_lost"
            stopped = httpx.delete(url, headers=headers, timeout=10)
            assert stopped.status_code == 200 and stopped.json()["status"] == "ended"
        fresh = [
            httpx.post(f"{base}/api/v1/sessions", json=echo, headers=headers, timeout=30) for _ in range(2)
        ]
        assert [r.status_code for r in fresh] == [202, 202], [r.text for r in fresh]
        for created in fresh:
            # The row's lifecycle follows the live status a moment later: live, not over, is what counts.
            assert wait_stable(base, created.json()["id"], headers)["session_status"] not in (
                "ended",
                "failed",
            )
    finally:
        stop_dev(proc)
