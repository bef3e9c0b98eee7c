"""Workspace snapshots: a 50 MB workspace with 1 % of it changed, snapshotted and restored through
moto's S3 server on 127.0.0.1, beside raw obstore puts and gets of the same bytes at the same
concurrency (the anchor: what the store costs without our hashing, compression and sealing).

The added latency per turn: a snapshot starts ``AGENTAPI_WORKSPACE_SNAPSHOT_DEBOUNCE_SECONDS``
after the turn's last event, in a task of its own, so it is not on the reply path. Measured two
ways: the event-loop delay a 1 ms ticker on the loop sees while a snapshot runs (what the host's
other sessions feel), and submit → first reply byte of an echo session whose 50 MB workspace
changes 1 % before every turn, turns back to back, on a host with the S3 store and no debounce
(each turn's snapshot runs while the next turn starts: the worst case) against a session on a
host without a store, in the same stack at the same time."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import obstore

from bench.harness import Row, percentile, stack, start_echo, summary_ms
from bench.latency import measure_turns
from schemas.crypto import KeyRing
from tests.fixtures.s3 import make_bucket, moto_server
from workers.workspace_sync import CONCURRENCY, SnapshottedWorkspace

FILE_BYTES = 100 * 1024
FILES = 500  # 50 MB
CHANGED = FILES // 100  # 1 %


def content(index: int, salt: bytes) -> bytes:
    """Half the files source-like text (compresses), half random (does not), as a real tree mixes."""
    if index % 2:
        return os.urandom(FILE_BYTES)
    line = f"def function_{index}(value):  # {salt.hex()}\n    return value * {index}\n".encode()
    return (line * (FILE_BYTES // len(line) + 1))[:FILE_BYTES]


def fill(workspace: Path, files: int) -> None:
    for index in range(files):
        target = workspace / f"dir{index % 20}" / f"file{index}.dat"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content(index, os.urandom(4)))


def change(workspace: Path, files: int, round_: int) -> None:
    for index in range(round_ * CHANGED, round_ * CHANGED + CHANGED):
        (workspace / f"dir{index % files % 20}" / f"file{index % files}.dat").write_bytes(
            content(index % files, os.urandom(4))
        )


async def loop_delay_during(work: asyncio.Future[bool]) -> list[float]:
    """How late a 1 ms ticker on this loop wakes while ``work`` runs (seconds)."""
    delays = []
    while not work.done():
        began = time.perf_counter()
        await asyncio.sleep(0.001)
        delays.append(max(0.0, time.perf_counter() - began - 0.001))
    return delays


async def raw_puts(store: obstore.store.ObjectStore, prefix: str, blobs: list[bytes]) -> float:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def put(index: int, data: bytes) -> None:
        async with limit:
            await obstore.put_async(store, f"{prefix}{index}", data)

    began = time.perf_counter()
    await asyncio.gather(*(put(index, data) for index, data in enumerate(blobs)))
    return time.perf_counter() - began


async def raw_gets(store: obstore.store.ObjectStore, prefix: str, count: int) -> float:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def get(index: int) -> None:
        async with limit:
            await (await obstore.get_async(store, f"{prefix}{index}")).bytes_async()

    began = time.perf_counter()
    await asyncio.gather(*(get(index) for index in range(count)))
    return time.perf_counter() - began


async def turn_latency(files: int, turns: int, store_env: dict[str, str]) -> tuple[list[float], list[float]]:
    """Submit → first reply byte of two echo sessions on one stack, each with ``files`` files of
    which 1 % are rewritten before every turn: one on a sessions worker without a store, one on a
    worker with the store and no debounce; their turns alternate in blocks, so both see the same
    load on this shared machine. Each worker has one slot, which places each session."""
    block = 10
    async with stack(worker=False) as s:
        headers = s.headers()
        async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as client:
            s.start_worker("sessions", threads=1)
            plain = await start_echo(client, s, headers)
            s.start_worker(
                "sessions", threads=1, env={**store_env, "AGENTAPI_WORKSPACE_SNAPSHOT_DEBOUNCE_SECONDS": "0"}
            )
            stored = await start_echo(client, s, headers)
            root = Path(s.env["AGENTAPI_WORKSPACE_ROOT"]) / str(s.org_id) / str(s.user_id)
            samples: dict[str, list[float]] = {plain: [], stored: []}
            for session in samples:
                await asyncio.to_thread(fill, root / session, files)
            for round_ in range(0, turns, block):
                for session in samples:

                    async def touch(turn: int, workspace: Path = root / session, first: int = round_) -> None:
                        await asyncio.to_thread(change, workspace, files, first + turn)

                    measured = await measure_turns(client, session, headers, block, before_each=touch)
                    samples[session] += measured.samples
            for session in samples:
                await client.delete(f"/api/v1/sessions/{session}", headers=headers)
    return samples[plain], samples[stored]


async def bench(quick: bool) -> list[Row]:
    files = FILES // 5 if quick else FILES
    rounds = 2 if quick else 5
    keys = KeyRing.parse(f"bench:{KeyRing.generate_key()}")
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="bench-ws-") as scratch:
        bucket = make_bucket(endpoint)
        store = bucket.store()
        org, user, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        host = SnapshottedWorkspace(store, keys, org, user, session, Path(scratch) / "a")
        host.workspace.mkdir(parents=True)
        await asyncio.to_thread(fill, host.workspace, files)
        total_mb = files * FILE_BYTES / 1e6

        began = time.perf_counter()
        await host.snapshot()
        first = time.perf_counter() - began

        incremental, delays = [], []
        for round_ in range(rounds):
            await asyncio.to_thread(change, host.workspace, files, round_)
            began = time.perf_counter()
            task = asyncio.ensure_future(host.snapshot())
            delays += await loop_delay_during(task)
            await task
            incremental.append(time.perf_counter() - began)

        restores = []
        for round_ in range(rounds):
            other = SnapshottedWorkspace(store, keys, org, user, session, Path(scratch) / f"b{round_}")
            began = time.perf_counter()
            await other.restore()
            restores.append(time.perf_counter() - began)
            await asyncio.to_thread(shutil.rmtree, other.workspace)

        changed_blobs = [content(index, os.urandom(4)) for index in range(CHANGED)]
        all_blobs = [content(index, os.urandom(4)) for index in range(files)]
        await raw_puts(store, "raw/all/", all_blobs)
        put_anchor = statistics.median(
            [await raw_puts(store, "raw/changed/", changed_blobs) for _ in range(rounds)]
        )
        get_anchor = statistics.median([await raw_gets(store, "raw/all/", files) for _ in range(rounds)])

        turns = 20 if quick else 100
        plain, stored = await turn_latency(files, turns, bucket.env())

    snap, restore = statistics.median(incremental), statistics.median(restores)
    without, with_store = summary_ms(plain), summary_ms(stored)
    added = with_store["p50_ms"] - without["p50_ms"]
    return [
        Row(
            "workspaces",
            f"first snapshot of {total_mb:.0f} MB ({files} files)",
            round(first, 2),
            "s",
            "reference",
            None,
        ),
        Row(
            "workspaces",
            f"snapshot with 1 % changed ({CHANGED} files, median of {rounds}; raw put of the same: {put_anchor * 1000:.0f} ms)",
            round(snap * 1000, 1),
            "ms",
            "≤ 1 s",
            snap <= 1.0,
            {"runs_ms": [round(t * 1000, 1) for t in incremental], "raw_put_ms": round(put_anchor * 1000, 1)},
        ),
        Row(
            "workspaces",
            f"restore of {total_mb:.0f} MB (median of {rounds}; raw get of the same: {get_anchor:.2f} s)",
            round(restore, 2),
            "s",
            "≤ 10 s",
            restore <= 10.0,
            {"runs_s": [round(t, 2) for t in restores], "raw_get_s": round(get_anchor, 2)},
        ),
        Row(
            "workspaces",
            "event-loop delay while a snapshot runs, p99 (max in details)",
            round(percentile(delays, 99) * 1000, 1),
            "ms",
            "≤ 20 ms",
            percentile(delays, 99) <= 0.020,
            {"max_ms": round(max(delays, default=0.0) * 1000, 1), "ticks": len(delays)},
        ),
        Row(
            "workspaces",
            f"added per turn at p50, no debounce: submit → reply {with_store['p50_ms']} ms with a snapshot after every"
            f" turn vs {without['p50_ms']} ms without a store (p99 {with_store['p99_ms']} vs {without['p99_ms']})",
            round(added, 1),
            "ms",
            "≤ 5 ms (off the reply path)",
            added <= 5,
            {"with_store": with_store, "without_store": without},
        ),
    ]
