"""A session host that fails after marking its session started, before it queued the session's first
prompt: the redelivered host (a recovery, since the row says started) still types the prompt, once,
and the failed host's agent is gone.

The CI failure of test_outages: after a Redis restart, each idle pooled connection failed its next
command, here the host's first emit; the retry recovered the session without its prompt and no
reply ever came. The fault here is a real one at that point: the session's event log is a key of
the wrong type (WRONGTYPE) until the first attempt has failed.

Real processes: `agentapi serve` and `agentapi worker --queues sessions` on the test run's
PostgreSQL and Redis, the echo agent in a PTY.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from events.payloads import UserMessage, input_fields
from events.streams import Names
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, running_stack
from tests.test_skeleton_e2e import ECHO
from tests.waiting import until_sync

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def bare_stack(pg_urls: DbUrls, jwt_secret: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(pg_urls, jwt_secret, tmp_path, worker=False) as stack:
        yield stack


def agents_of(session_id: str) -> list[int]:
    """The live echo agents of ``session_id``: the outermost of the processes whose command line
    names the agent and the session's workspace (bwrap runs the agent as its own child)."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state, parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z" and b"echo_agent.py" in cmdline and session_id.encode() in cmdline:
            parents[int(proc.name)] = int(parent)
    return [pid for pid, parent in parents.items() if parent not in parents]


def test_a_host_that_fails_after_the_start_leaves_the_prompt_to_the_recovery(bare_stack: Stack) -> None:
    stack = bare_stack
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    headers = stack.headers()
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        created = client.post("/api/v1/sessions", json={**ECHO, "prompt": "first"}, headers=headers)
        assert created.status_code == 202, created.text
        session_id = created.json()["id"]
        # No worker runs yet: the host's first emit (session.started) will find this.
        store.set(names.session_log(session_id), "not a stream")
        stack.start_worker("sessions")
        until_sync(
            lambda: "WRONGTYPE" in stack.logs() and "Retrying message" in stack.logs(),
            timeout=60,
            what="the first host failed at its first emit",
        )
        store.delete(names.session_log(session_id))

        def replies() -> list[str]:
            listed = client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers).json()
            return [m["content"] for m in listed["messages"]]

        until_sync(lambda: "echo: first" in replies(), timeout=60, what="the prompt answered")
        assert "recovering session" in stack.logs()
        # Queued once: a second copy would be on the input stream before the first was typed.
        queued = [fields for _, fields in store.xrange(names.session_input(session_id))]
        assert queued == [input_fields(UserMessage(content="first"))]
        messages = replies()
        assert messages.count("echo: first") == 1, messages
        # The failed host stopped its agent: only the recovery's runs.
        assert len(agents_of(session_id)) == 1
        client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    store.close()
