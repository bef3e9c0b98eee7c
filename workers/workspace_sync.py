"""Workspace snapshots in object storage, so a session can move to another host.

Two backends behind one interface: ``LocalWorkspace`` (no store configured: the workspace lives on
``WORKSPACE_ROOT`` only, a volume every host of the pool must share) and ``SnapshottedWorkspace``
(``AGENTAPI_WORKSPACE_STORE_URL``: S3 and what speaks its API, GCS, or a directory, through obstore,
whose Rust client does the transfers without holding the GIL and reads the usual AWS_*/GOOGLE_*
variables; aioboto3 would put boto's pure-Python signing on the loop that hosts every session).

Layout under the store's prefix, per session ``{org}/{user}/{session}/``:

- ``blobs/<hmac>``: one file's content, zlib-compressed and sealed with the key ring. Its name is an
  HMAC of the content under a per-organization key derived from the key ring: a file is uploaded
  once however many snapshots hold it, and the store learns nothing from the names.
- ``manifest``: the sealed list of files (path, blob, size, mode, mtime), written after the blobs it
  names, so a reader always finds a whole snapshot; blobs it no longer names are deleted after it.

The associated data of every object is its org, user, session and name: an object copied to another
tenant's or session's prefix does not open. ``.home`` (router configs, gateway tokens) is not
snapshotted but for the agent CLIs' conversation folders, and symlinks never are. A snapshot larger than the workspace quota is refused and the last one kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from uuid import UUID

import obstore
from obstore.store import ObjectStore

from schemas.crypto import KeyRing
from schemas.settings import Settings
from services.workspace_store import erase_prefix, open_store, session_prefix

log = logging.getLogger(__name__)

# The session's HOME: adapters write its secrets there (gateway token, router and provider
# configs), issued anew on every host, so it is not snapshotted...
HOME = ".home"
# ...except the folders where the agent CLIs keep the conversation their resume flag reads
# (claude --continue, codex resume --last, gemini --resume, goose --resume, droid --resume): the
# agent carries on with its context on the next host. Nothing an adapter writes is in them.
HOME_STATE = (
    ".claude/projects",
    ".codex/sessions",
    ".gemini/tmp",
    ".local/share/goose/sessions",
    ".factory/sessions",
)
# Transfers in flight per snapshot or restore.
CONCURRENCY = 16
MANIFEST = "manifest"
MANIFEST_VERSION = 1


class WorkspaceUnavailable(RuntimeError):
    """The session's last snapshot could not be restored: starting on an empty workspace would
    lose the agent's work, so the session is retried instead."""


class SnapshotRefused(Exception):
    """The workspace is larger than its quota: the previous snapshot stays the latest."""


@dataclass(frozen=True)
class FileEntry:
    blob: str
    size: int
    mode: int
    mtime_ns: int


class WorkspaceStore(Protocol):
    async def restore(self) -> int: ...
    async def snapshot(self) -> bool: ...
    def turn_completed(self) -> None: ...
    async def run(self) -> None: ...
    async def erase(self) -> None: ...


class LocalWorkspace:
    """The workspace is only on this host's WORKSPACE_ROOT: nothing to restore, snapshot or erase."""

    async def restore(self) -> int:
        return 0

    async def snapshot(self) -> bool:
        return False

    def turn_completed(self) -> None:
        pass

    async def run(self) -> None:
        pass

    async def erase(self) -> None:
        pass


def workspace_store_for(
    settings: Settings, org_id: UUID, user_id: UUID, session_id: UUID, workspace: Path
) -> WorkspaceStore:
    if not settings.workspace_store_url:
        return LocalWorkspace()
    return SnapshottedWorkspace(
        open_store(settings.workspace_store_url),
        settings.key_ring(),
        org_id,
        user_id,
        session_id,
        workspace,
        quota=settings.workspace_quota_bytes,
        debounce=settings.workspace_snapshot_debounce_seconds,
    )


def snapshotted(relative: str) -> bool:
    """Whether a workspace path belongs in snapshots: anything but HOME, where only HOME_STATE does."""
    first, _, rest = relative.partition("/")
    return first != HOME or any(rest.startswith(f"{state}/") for state in HOME_STATE)


def scan(workspace: Path) -> dict[str, os.stat_result]:
    """Regular files that belong in snapshots, by relative POSIX path; symlinks are skipped, and
    never followed (blocking: run it in a thread). One scandir per folder and one lstat per file:
    this runs for every snapshot, on the host of many sessions."""
    found: dict[str, os.stat_result] = {}

    def walk(folder: str, prefix: str) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            relative = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if relative != HOME:
                        walk(entry.path, relative + "/")
                elif entry.is_file(follow_symlinks=False) and snapshotted(relative):
                    found[relative] = entry.stat(follow_symlinks=False)
            except OSError:
                continue

    walk(str(workspace), "")
    for state in HOME_STATE:
        top = workspace / HOME / state
        # A symlink on the way would be the agent pointing it outside its workspace.
        if top.resolve() == workspace.resolve() / HOME / state:
            walk(str(top), f"{HOME}/{state}/")
    return found


def open_beneath(workspace: Path, relative: str) -> int:
    """A read-only descriptor of a regular file under ``workspace``, following no symlink on the
    way: the agent can swap a folder for a link between the scan and the read, and the host must
    not upload a file of its own or of another session in its place."""
    *folders, name = PurePosixPath(relative).parts
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for folder in folders:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)


def has_files(workspace: Path) -> bool:
    return bool(scan(workspace)) if workspace.exists() else False


def safe_target(workspace: Path, relative: str) -> Path:
    """Where a manifest's path goes, refusing any that would leave the workspace."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or ".." in parts or not snapshotted(relative):
        raise ValueError(f"refusing snapshot path {relative!r}")
    target = workspace.joinpath(*parts)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(workspace.resolve()):
        raise ValueError(f"refusing snapshot path {relative!r}: it leaves the workspace")
    return target


class SnapshottedWorkspace:
    def __init__(
        self,
        store: ObjectStore,
        keys: KeyRing,
        org_id: UUID,
        user_id: UUID,
        session_id: UUID,
        workspace: Path,
        quota: int | None = None,
        debounce: float = 5.0,
    ) -> None:
        self.store = store
        self.keys = keys
        self.workspace = workspace
        self.quota = quota
        self.debounce = debounce
        self.prefix = session_prefix(org_id, user_id, session_id)
        self._identity = f"workspace|{org_id}|{user_id}|{session_id}"
        # Per organization: equal files of two tenants get unrelated names.
        self._name_key = keys.derive_key(f"workspace-blob-names|{org_id}")
        # What the latest snapshot in the store holds.
        self._index: dict[str, FileEntry] = {}
        self._lock = asyncio.Lock()
        self._due = asyncio.Event()

    def _aad(self, name: str) -> bytes:
        return f"{self._identity}|{name}".encode()

    def _seal(self, name: str, plain: bytes) -> bytes:
        return self.keys.seal_bytes(zlib.compress(plain, 1), self._aad(name))

    def _open(self, name: str, frame: bytes) -> bytes:
        return zlib.decompress(self.keys.open_bytes(frame, self._aad(name)))

    async def manifest(self) -> dict[str, FileEntry] | None:
        """The latest snapshot's files, or None when the session has none."""
        try:
            frame = bytes(await (await obstore.get_async(self.store, self.prefix + MANIFEST)).bytes_async())
        except FileNotFoundError:
            return None
        document = json.loads(self._open(MANIFEST, frame))
        return {path: FileEntry(*fields) for path, fields in document["files"].items()}

    async def restore(self) -> int:
        """Bring the latest snapshot into an empty workspace; how many files were written. A
        workspace that already has files was left by an earlier host process on this machine and
        is at least as new as the snapshot, so it is kept."""
        try:
            manifest = await self.manifest()
            if manifest is None:
                return 0
            self._index = manifest
            if await asyncio.to_thread(has_files, self.workspace):
                return 0
            limit = asyncio.Semaphore(CONCURRENCY)

            async def fetch(path: str, entry: FileEntry) -> None:
                async with limit:
                    got = await obstore.get_async(self.store, f"{self.prefix}blobs/{entry.blob}")
                    await asyncio.to_thread(self._write, path, entry, bytes(await got.bytes_async()))

            await asyncio.gather(*(fetch(path, entry) for path, entry in manifest.items()))
        except Exception as exc:
            raise WorkspaceUnavailable(
                f"the workspace snapshot of {self.prefix} cannot be restored: {exc}"
            ) from exc
        log.info("restored %d files of %s", len(manifest), self.prefix)
        return len(manifest)

    def _write(self, path: str, entry: FileEntry, frame: bytes) -> None:
        target = safe_target(self.workspace, path)
        partial = target.with_name(f".{target.name}.restoring")
        partial.write_bytes(self._open(f"blobs/{entry.blob}", frame))
        partial.chmod(stat.S_IMODE(entry.mode) & 0o777)
        # The recorded mtime, so the next snapshot sees the file as unchanged and does not re-read it.
        os.utime(partial, ns=(entry.mtime_ns, entry.mtime_ns))
        partial.replace(target)

    async def snapshot(self) -> bool:
        """Upload what changed since the last snapshot and point the manifest at it; False when
        nothing changed. SnapshotRefused past the quota."""
        async with self._lock:
            found = await asyncio.to_thread(scan, self.workspace)
            total = sum(info.st_size for info in found.values())
            if self.quota is not None and total > self.quota:
                raise SnapshotRefused(f"{self.prefix} holds {total} bytes, over its quota of {self.quota}")
            entries: dict[str, FileEntry] = {}
            changed: list[str] = []
            for path, info in found.items():
                known = self._index.get(path)
                if known and (known.size, known.mtime_ns) == (info.st_size, info.st_mtime_ns):
                    entries[path] = FileEntry(known.blob, known.size, info.st_mode, known.mtime_ns)
                else:
                    changed.append(path)
            stored = {entry.blob for entry in self._index.values()}
            limit = asyncio.Semaphore(CONCURRENCY)
            uploaded = 0

            async def upload(path: str) -> None:
                nonlocal uploaded
                async with limit:
                    read = await asyncio.to_thread(self._read, path, stored)
                    if read is None:
                        return  # gone since the scan
                    entry, frame = read
                    if frame is not None:
                        await obstore.put_async(self.store, f"{self.prefix}blobs/{entry.blob}", frame)
                        stored.add(entry.blob)
                        uploaded += 1
                    entries[path] = entry

            await asyncio.gather(*(upload(path) for path in changed))
            if entries == self._index:
                return False
            document = {
                "v": MANIFEST_VERSION,
                "files": {p: [e.blob, e.size, e.mode, e.mtime_ns] for p, e in entries.items()},
            }
            await obstore.put_async(
                self.store, self.prefix + MANIFEST, self._seal(MANIFEST, json.dumps(document).encode())
            )
            unused = {entry.blob for entry in self._index.values()} - {
                entry.blob for entry in entries.values()
            }
            if unused:
                await obstore.delete_async(self.store, [f"{self.prefix}blobs/{blob}" for blob in unused])
            self._index = entries
            log.info(
                "snapshot of %s: %d files, %d uploaded, %d bytes", self.prefix, len(entries), uploaded, total
            )
            return True

    def _read(self, path: str, stored: set[str]) -> tuple[FileEntry, bytes | None] | None:
        """The file's entry, and its sealed blob unless the store has that content already."""
        try:
            with open(open_beneath(self.workspace, path), "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    return None  # swapped for a FIFO or device since the scan
                content = handle.read()
        except OSError:
            return None
        blob = hmac.new(self._name_key, content, hashlib.sha256).hexdigest()
        entry = FileEntry(blob, len(content), info.st_mode, info.st_mtime_ns)
        return entry, None if blob in stored else self._seal(f"blobs/{blob}", content)

    def turn_completed(self) -> None:
        self._due.set()

    async def run(self) -> None:
        """Snapshot a while after each completed turn; turns completing meanwhile are in the same
        snapshot. Off the reply path: the turn's events are out before this starts."""
        while True:
            await self._due.wait()
            await asyncio.sleep(self.debounce)
            self._due.clear()
            try:
                await self.snapshot()
            except Exception:
                # A missed snapshot must not end the session; the next turn's, or the hand-over's, retries.
                log.exception("snapshot of %s failed", self.prefix)

    async def erase(self) -> None:
        await asyncio.to_thread(erase_prefix, self.store, self.prefix)
        self._index = {}
