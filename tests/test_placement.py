"""Placement: a sessions worker advertises its slots, takes no more sessions than it has, and the
rest wait in the queue (``agentapi_sessions_waiting``) until another host has room."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, running_stack
from tests.test_metrics import Samples, value
from tests.test_skeleton_e2e import ECHO

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bare_stack(pg_urls: DbUrls, jwt_secret: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(pg_urls, jwt_secret, tmp_path_factory.mktemp("placement"), worker=False) as stack:
        yield stack


async def metrics(client: httpx.AsyncClient) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    text = (await client.get("/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def until(client: httpx.AsyncClient, check: object, what: str) -> Samples:
    for _ in range(300):
        samples = await metrics(client)
        if check(samples):  # type: ignore[operator]
            return samples
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"never: {what}; last scrape: {sorted((k[0], v) for k, v in samples.items() if 'host' in k[0] or 'waiting' in k[0])}"
    )


def hosted(samples: Samples) -> list[float]:
    return sorted(v for (name, _), v in samples.items() if name == "agentapi_host_sessions")


async def test_a_full_host_leaves_sessions_waiting_for_another(bare_stack: Stack) -> None:
    stack = bare_stack
    headers = stack.headers()
    first = stack.start_worker("sessions", threads=2)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        ids = []
        for _ in range(3):
            created = await client.post("/api/v1/sessions", json=ECHO, headers=headers)
            assert created.status_code == 202, created.text
            ids.append(created.json()["id"])

        full = await until(
            client,
            lambda s: hosted(s) == [2] and value(s, "agentapi_sessions_waiting") == 1,
            "one host with both slots used and one session waiting",
        )
        assert value(full, "agentapi_session_hosts") == 1
        assert value(full, "agentapi_host_session_slots") == 2
        assert value(full, "agentapi_host_utilization") == 1.0

        stack.start_worker("sessions", threads=2)
        spread = await until(
            client,
            lambda s: hosted(s) == [1, 2] and value(s, "agentapi_sessions_waiting") == 0,
            "the waiting session placed on the new host",
        )
        assert value(spread, "agentapi_session_hosts") == 2
        for session_id in ids:
            for _ in range(300):
                if (await client.get(f"/api/v1/sessions/{session_id}/status", headers=headers)).json()[
                    "status"
                ] == "stable":
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"session {session_id} never ran")

        # A stopping host withdraws its slots at once.
        os.killpg(first.pid, signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        await until(client, lambda s: value(s, "agentapi_session_hosts") == 1, "the stopped host withdrawn")
        for session_id in ids:
            await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
