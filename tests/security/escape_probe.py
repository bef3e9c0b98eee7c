"""What a hostile agent tries from inside its session; run by a shell in the session's PTY.

Takes a JSON object of targets (paths, pids, ports) and prints a JSON report: for each attempt,
whether it succeeded and what happened. The test asserts every escape failed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time


def attempt(report: dict[str, dict[str, object]], name: str, action) -> None:  # type: ignore[no-untyped-def]
    try:
        result = action()
    except OSError as exc:
        report[name] = {"succeeded": False, "detail": f"{type(exc).__name__}: {exc}"}
    else:
        report[name] = {"succeeded": True, "detail": str(result)[:200]}


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def write(path: str) -> str:
    with open(path, "w") as handle:
        handle.write("escaped")
    return path


def connect(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=3) as sock:
        return f"connected to {sock.getpeername()}"


def fork_many(count: int) -> int:
    children = []
    try:
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return len(children)


def main() -> None:
    targets = json.loads(sys.argv[1])
    report: dict[str, dict[str, object]] = {}
    for name, path in targets["read"].items():
        attempt(report, f"read {name}", lambda p=path: read(p))
    for name, pid in targets["pids"].items():
        attempt(report, f"environ of {name}", lambda p=pid: read(f"/proc/{p}/environ"))
        attempt(report, f"signal {name}", lambda p=pid: os.kill(p, signal.SIGKILL))
    # (Its parent is the session's own shell, which it may read; pid 1 is the sandbox's init.)
    attempt(report, "environ of pid 1", lambda: read("/proc/1/environ"))
    for name, port in targets["ports"].items():
        attempt(report, f"connect {name}", lambda p=port: connect("127.0.0.1", p))
    attempt(report, "connect metadata", lambda: connect("169.254.169.254", 80))
    for name, path in targets["write"].items():
        attempt(report, f"write {name}", lambda p=path: write(p))
    attempt(report, "fork past the process limit", lambda: fork_many(targets["forks"]))
    # Other processes: pid numbers and command lines of everything this process can see.
    visible = {
        pid: read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode()
        for pid in os.listdir("/proc")
        if pid.isdigit()
    }
    own = write("own-file.txt") and read("own-file.txt").decode()
    print(json.dumps({"attempts": report, "visible": visible, "own": own, "uid": os.getuid()}))


if __name__ == "__main__":
    main()
