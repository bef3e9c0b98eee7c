"""`agentapi serve`: with --workers N, N processes answer on one port and each drains on SIGTERM;
the access log can be turned off."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.fixtures.stack import Stack, free_port, spawn, stop, wait_ready


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def serving_processes(pid: int, count: int) -> list[int]:
    """The worker processes under the supervisor, once there are ``count`` of them."""
    deadline = time.monotonic() + 60
    while len(found := children(pid)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} worker processes started"
        time.sleep(0.1)
    return found


def answered(base_url: str, headers: dict[str, str]) -> int:
    # A new connection each time: the kernel gives it to a process that is accepting.
    with httpx.Client(base_url=base_url, timeout=20) as client:
        return client.get("/api/v1/sessions", headers=headers).status_code


def test_every_worker_process_serves_and_all_drain(stack: Stack) -> None:
    port = free_port()
    server = spawn(["serve", "--port", str(port), "--workers", "2"], stack.env, stack.log_file)
    base_url = f"http://127.0.0.1:{port}"
    headers = stack.headers()
    try:
        wait_ready(base_url, server)
        workers = serving_processes(server.pid, 2)
        assert len(workers) == 2
        for frozen in workers:
            # With one process stopped, the other answers alone; then the other way round.
            os.kill(frozen, signal.SIGSTOP)
            try:
                for _ in range(5):
                    assert answered(base_url, headers) == 200
            finally:
                os.kill(frozen, signal.SIGCONT)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        stop(server)


def test_workers_must_be_positive(stack: Stack) -> None:
    refused = spawn(["serve", "--port", str(free_port()), "--workers", "0"], stack.env)
    assert refused.wait(timeout=30) == 2


def test_the_access_log_can_be_turned_off(stack: Stack, tmp_path: Path) -> None:
    for enabled in ("true", "false"):
        port, log_file = free_port(), tmp_path / f"access-{enabled}.log"
        env = {**stack.env, "AGENTAPI_ACCESS_LOG": enabled}
        server = spawn(["serve", "--port", str(port)], env, log_file)
        try:
            wait_ready(f"http://127.0.0.1:{port}", server)
            assert answered(f"http://127.0.0.1:{port}", stack.headers()) == 200
        finally:
            stop(server)
        logged = [line for line in log_file.read_text().splitlines() if '"uvicorn.access"' in line]
        assert bool(logged) == (enabled == "true"), logged
