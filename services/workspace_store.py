"""Where workspace snapshots live in object storage (``AGENTAPI_WORKSPACE_STORE_URL``), and the
erasures that do not need a running session: GDPR (a user's) and retention (a session's). The
snapshots themselves are written and read by ``workers.workspace_sync``."""

from __future__ import annotations

import functools

import obstore
from obstore.store import ObjectStore, from_url


@functools.cache
def open_store(url: str) -> ObjectStore:
    """One client per process and URL (it pools its connections)."""
    if url.startswith("file://"):
        return from_url(url, mkdir=True)
    return from_url(url)


def session_prefix(org_id: object, user_id: object, session_id: object) -> str:
    return f"{org_id}/{user_id}/{session_id}/"


def user_prefix(org_id: object, user_id: object) -> str:
    return f"{org_id}/{user_id}/"


def erase_prefix(store: ObjectStore, prefix: str) -> int:
    """Delete every object under ``prefix`` (blocking: run it in a thread, or from a sync actor);
    how many were deleted."""
    deleted = 0
    for batch in obstore.list(store, prefix=prefix, chunk_size=1000):
        paths = [meta["path"] for meta in batch]
        obstore.delete(store, paths)
        deleted += len(paths)
    return deleted
