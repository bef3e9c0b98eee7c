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


def test_dev_runs_a_session_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    # Nothing of the test run's settings: no database, Redis or secret in the environment.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
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
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    token = None
    try:
        deadline = time.monotonic() + 90
        while token is None and time.monotonic() < deadline and proc.poll() is None:
            lines = list(output)
            token = next(
                (lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if line.startswith("token (")),
                None,
            )
            time.sleep(0.1)
        assert token, "".join(output[-40:])
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
        time.sleep(0.5)
        assert processes_of(proc.pid, tmp_path) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
