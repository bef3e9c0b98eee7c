"""Workspaces that move between hosts: snapshots in S3 (moto's server, see tests/fixtures/s3.py),
restored by the host that takes a session over. Two sessions workers with separate workspace roots
stand for two machines."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import obstore
import pytest
import redis.asyncio
from sqlalchemy import text

from events.streams import Names
from schemas.crypto import DecryptionError, KeyRing
from schemas.db import create_engine, dispose_engine
from services.retention import purge_expired
from tests.fixtures.postgres import DbUrls, service_engine
from tests.fixtures.s3 import Bucket, make_bucket
from tests.fixtures.stack import TEST_ENCRYPTION_KEYS, Stack, running_stack, seed_async
from tests.test_session_recovery import wait_stable
from tests.test_skeleton_e2e import ECHO, agent_said, named, read_events
from workers.workspace_sync import (
    FileEntry,
    SnapshotRefused,
    SnapshottedWorkspace,
    WorkspaceUnavailable,
    scan,
)

pytestmark = pytest.mark.timeout(90)
KEYS = KeyRing.parse(TEST_ENCRYPTION_KEYS)


def snapshotted(
    bucket: Bucket, root: Path, org: uuid.UUID, user: uuid.UUID, session: uuid.UUID, **kw: object
) -> SnapshottedWorkspace:
    return SnapshottedWorkspace(bucket.store(), KEYS, org, user, session, root / str(session), **kw)  # type: ignore[arg-type]


async def stored_paths(bucket: Bucket, prefix: str) -> list[str]:
    return [meta["path"] async for batch in obstore.list(bucket.store(), prefix=prefix) for meta in batch]


async def test_snapshots_upload_only_what_changed_and_restore_elsewhere(
    s3_bucket: Bucket, tmp_path: Path
) -> None:
    org, user, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = snapshotted(s3_bucket, tmp_path / "host-a", org, user, session)
    work = first.workspace
    (work / "src").mkdir(parents=True)
    (work / "src" / "main.py").write_text("print('hi')\n")
    (work / "notes.md").write_text("# notes\n")
    (work / "copy.md").write_text("# notes\n")
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "run.sh").chmod(0o755)
    (work / ".home" / ".claude" / "projects" / "ws").mkdir(parents=True)
    (work / ".home" / ".claude" / "projects" / "ws" / "chat.jsonl").write_text('{"role": "user"}\n')
    (work / ".home" / ".claude-code-router").mkdir()
    (work / ".home" / ".claude-code-router" / "config.json").write_text('{"APIKEY": "secret"}')
    os.symlink("/etc/passwd", work / "passwd")
    assert await first.snapshot()
    objects = await stored_paths(s3_bucket, first.prefix)
    # Equal contents are one blob; names say nothing of paths or contents.
    assert len(objects) == 1 + 4
    assert not any("notes" in path or "main" in path for path in objects)
    assert not await first.snapshot(), "nothing changed, nothing written"

    (work / "notes.md").write_text("# notes, longer\n")
    (work / "src" / "main.py").unlink()
    assert await first.snapshot()
    manifest = await first.manifest()
    assert manifest is not None and sorted(manifest) == [
        ".home/.claude/projects/ws/chat.jsonl",
        "copy.md",
        "notes.md",
        "run.sh",
    ]
    # The removed file's blob went with it; the old notes blob stays for copy.md.
    assert len(await stored_paths(s3_bucket, first.prefix)) == 1 + 4

    second = snapshotted(s3_bucket, tmp_path / "host-b", org, user, session)
    assert await second.restore() == 4
    restored = second.workspace
    # The agent's conversation moves (its CLI resumes it); the adapters' secrets never leave.
    assert (restored / ".home" / ".claude" / "projects" / "ws" / "chat.jsonl").exists()
    assert not (restored / ".home" / ".claude-code-router").exists()
    assert (restored / "notes.md").read_text() == "# notes, longer\n"
    assert (restored / "copy.md").read_text() == "# notes\n"
    assert (restored / "run.sh").stat().st_mode & 0o777 == 0o755
    assert not (restored / "passwd").exists()
    assert not await second.snapshot(), "restored files are known unchanged"

    await second.erase()
    assert await stored_paths(s3_bucket, first.prefix) == []


async def test_a_snapshot_takes_nothing_from_outside_its_workspace(s3_bucket: Bucket, tmp_path: Path) -> None:
    """The agent is hostile: links to the host's files or another session's, as a file, as a
    folder of HOME's conversation state, or swapped in for a folder after the scan, upload nothing."""
    outside = tmp_path / "other-session"
    (outside / "projects").mkdir(parents=True)
    (outside / "projects" / "theirs.jsonl").write_text("another tenant's conversation")
    (outside / "secret.txt").write_text("another tenant's file")
    sync = snapshotted(s3_bucket, tmp_path, uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    work = sync.workspace
    (work / ".home").mkdir(parents=True)
    os.symlink(outside, work / ".home" / ".claude")
    os.symlink(outside / "secret.txt", work / "linked.txt")
    (work / "swapped").mkdir()
    (work / "swapped" / "secret.txt").write_text("mine")
    (work / "mine.txt").write_text("mine")
    assert sorted(scan(work)) == ["mine.txt", "swapped/secret.txt"]
    # Between the scan and the read, the folder becomes a link to the other session's files.
    shutil.rmtree(work / "swapped")
    os.symlink(outside, work / "swapped")
    assert sync._read("swapped/secret.txt", set()) is None
    assert await sync.snapshot()
    manifest = await sync.manifest()
    assert manifest is not None and list(manifest) == ["mine.txt"]


async def test_a_workspace_over_its_quota_keeps_the_last_snapshot(s3_bucket: Bucket, tmp_path: Path) -> None:
    sync = snapshotted(s3_bucket, tmp_path, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), quota=1 << 20)
    sync.workspace.mkdir(parents=True)
    (sync.workspace / "small.txt").write_text("ok")
    assert await sync.snapshot()
    (sync.workspace / "big.bin").write_bytes(os.urandom(2 << 20))
    with pytest.raises(SnapshotRefused, match="over its quota"):
        await sync.snapshot()
    manifest = await sync.manifest()
    assert manifest is not None and list(manifest) == ["small.txt"]


async def test_a_snapshot_does_not_open_under_another_tenant_or_session(
    s3_bucket: Bucket, tmp_path: Path
) -> None:
    """Objects copied into another tenant's prefix (or another session's) fail to decrypt, so a
    mix-up or a hostile copy in the bucket never hands one tenant's files to another."""
    user, session = uuid.uuid4(), uuid.uuid4()
    victim = snapshotted(s3_bucket, tmp_path / "a", uuid.uuid4(), user, session)
    victim.workspace.mkdir(parents=True)
    (victim.workspace / "secret.txt").write_text("tenant A's code")
    assert await victim.snapshot()
    store = s3_bucket.store()
    for thief in (
        snapshotted(s3_bucket, tmp_path / "b", uuid.uuid4(), user, session),
        snapshotted(s3_bucket, tmp_path / "c", uuid.UUID(victim.prefix.split("/")[0]), user, uuid.uuid4()),
    ):
        for path in await stored_paths(s3_bucket, victim.prefix):
            await obstore.copy_async(store, path, thief.prefix + path.removeprefix(victim.prefix))
        with pytest.raises(DecryptionError):
            await thief.manifest()
        with pytest.raises(WorkspaceUnavailable):
            await thief.restore()
        assert not (thief.workspace / "secret.txt").exists()
    # And a blob moved under another name within the session does not open as that name either.
    manifest = await victim.manifest()
    assert manifest is not None
    entry = manifest["secret.txt"]
    frame = bytes(await (await obstore.get_async(store, f"{victim.prefix}blobs/{entry.blob}")).bytes_async())
    with pytest.raises(DecryptionError):
        victim._open("blobs/" + "0" * 64, frame)
    assert isinstance(entry, FileEntry)


async def test_retention_erases_the_snapshots_of_the_sessions_it_deletes(
    s3_bucket: Bucket, pg_urls: DbUrls, tmp_path: Path
) -> None:
    """A session whose host gave up never erased its snapshots; retention does, with its row."""
    org, user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, org, user, "Retention Org")
    long_ago = datetime.now(UTC) - timedelta(days=40)
    expired, recent = uuid.uuid4(), uuid.uuid4()
    owner = create_engine(pg_urls.owner, pool_size=1)
    async with owner.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tenant_settings (id, org_id, settings, retention_days, created_at, updated_at)"
                " VALUES (:id, :org, '{}', 30, now(), now())"
            ),
            {"id": uuid.uuid4(), "org": org},
        )
        for session_id, ended_at in [(expired, long_ago), (recent, datetime.now(UTC))]:
            await conn.execute(
                text(
                    "INSERT INTO user_sessions (id, org_id, user_id, agent_type, status, metadata, created_at,"
                    " updated_at, ended_at) VALUES (:id, :org, :user, 'custom', 'failed', '{}', :at, :at, :ended)"
                ),
                {"id": session_id, "org": org, "user": user, "at": long_ago, "ended": ended_at},
            )
    await owner.dispose()
    snapshots = {}
    for session_id in (expired, recent):
        sync = snapshotted(s3_bucket, tmp_path, org, user, session_id)
        sync.workspace.mkdir(parents=True)
        (sync.workspace / "work.txt").write_text("work")
        assert await sync.snapshot()
        snapshots[session_id] = sync.prefix
    service = service_engine(pg_urls)
    try:
        deleted = await purge_expired(service, store=s3_bucket.store())
    finally:
        await dispose_engine(service)
    assert deleted[str(org)] == 1
    assert await stored_paths(s3_bucket, snapshots[expired]) == []
    assert len(await stored_paths(s3_bucket, snapshots[recent])) == 2


@dataclass
class Hosts:
    stack: Stack
    bucket: Bucket
    roots: dict[int, Path]

    def start(self, root: Path) -> None:
        proc = self.stack.start_worker("sessions", env={"AGENTAPI_WORKSPACE_ROOT": str(root)})
        self.roots[proc.pid] = root


@pytest.fixture(scope="module")
def hosts(
    pg_urls: DbUrls, jwt_secret: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hosts]:
    bucket = make_bucket(s3_endpoint)
    scratch = tmp_path_factory.mktemp("hosts")
    overrides = {**bucket.env(), "AGENTAPI_WORKSPACE_SNAPSHOT_DEBOUNCE_SECONDS": "0.2"}
    with running_stack(pg_urls, jwt_secret, scratch, overrides, worker=False) as stack:
        result = Hosts(stack, bucket, {})
        result.start(scratch / "host-a")
        result.start(scratch / "host-b")
        yield result


async def wait_snapshot_with(sync: SnapshottedWorkspace, path: str) -> None:
    for _ in range(200):
        manifest = await sync.manifest()
        if manifest and path in manifest:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no snapshot of {sync.prefix} holds {path}")


async def say(
    client: httpx.AsyncClient, base: str, headers: dict[str, str], text: str, reply: str, after: str | None
) -> str:
    """Send ``text`` once the agent is stable; the id of the event that carried ``reply``."""
    await wait_stable(client, base, headers)
    assert (await client.post(f"{base}/message", json={"content": text}, headers=headers)).status_code == 200
    seen = await read_events(
        client,
        f"{base}/events",
        {**headers, **({"Last-Event-ID": after} if after else {})},
        until=agent_said(reply),
    )
    return seen[-1].id


@pytest.mark.parametrize("stop_with", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "graceful-stop"])
async def test_the_workspace_follows_its_session_to_another_host(hosts: Hosts, stop_with: int) -> None:
    """kill -9: the other host restores the last completed turn's snapshot. SIGTERM: the host
    snapshots after its agent stopped, so every file moves, even one written just before."""
    stack = hosts.stack
    headers = stack.headers()
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    state = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (await client.post("/api/v1/sessions", json=ECHO, headers=headers)).json()
        session_id, base = uuid.UUID(created["id"]), f"/api/v1/sessions/{created['id']}"
        sync = snapshotted(hosts.bucket, Path("/nonexistent"), stack.org_id, stack.user_id, session_id)
        last = await say(client, base, headers, "/put src/app.py print(1)", "put src/app.py", None)
        await wait_snapshot_with(sync, "src/app.py")
        if stop_with == signal.SIGTERM:
            last = await say(
                client, base, headers, "/put late.txt just before the stop", "put late.txt", last
            )

        host_pid = int((await state.hgetall(names.session_state(str(session_id))))["host"].rsplit(":", 1)[1])
        victim = next(proc for proc in stack.workers if proc.pid == host_pid)
        os.killpg(victim.pid, stop_with)
        assert victim.wait(timeout=30) == (0 if stop_with == signal.SIGTERM else -signal.SIGKILL)
        # The next test needs two hosts again.
        hosts.start(hosts.roots[host_pid].with_name(f"host-{uuid.uuid4().hex[:6]}"))

        recovered = await read_events(
            client, f"{base}/events", {**headers, "Last-Event-ID": last}, until=named("session_recovered")
        )
        new_pid = int(json.loads(recovered[-1].data)["worker"].rsplit(":", 1)[1])
        new_root = hosts.roots[new_pid]
        assert new_root != hosts.roots[host_pid], "another host, with its own disk"
        workspace = new_root / str(stack.org_id) / str(stack.user_id) / str(session_id)
        assert (workspace / "src" / "app.py").read_text() == "print(1)"
        if stop_with == signal.SIGTERM:
            assert (workspace / "late.txt").read_text() == "just before the stop"
        # The agent works on in the restored files.
        await say(client, base, headers, "/cat src/app.py", "print(1)", recovered[-1].id)

        assert (await client.delete(base, headers=headers)).status_code in (200, 202, 204)
        for _ in range(200):
            if (await client.get(base, headers=headers)).json()["status"] == "ended":
                break
            await asyncio.sleep(0.05)
        assert await stored_paths(hosts.bucket, sync.prefix) == [], "an ended session's snapshots are gone"
    await state.aclose()
