"""The ``default`` pool's housekeeping: files that must go when their owner's data goes."""

from __future__ import annotations

import logging
import shutil

import dramatiq

from events.envelope import Event
from services.workspace_store import erase_prefix, open_store, user_prefix
from workers.context import current
from workers.event_context import current_event

log = logging.getLogger(__name__)


@dramatiq.actor(queue_name="default", actor_name="erase_workspaces", max_retries=5, envelope=True)
def erase_workspaces(envelope: str) -> None:
    """Delete an erased user's workspaces in one organization, and their snapshots in the workspace
    store (idempotent: gone is gone)."""
    _erase(current_event())


def _erase(event: Event) -> None:
    settings = current().settings
    if settings.workspace_store_url:
        # A sync actor runs on a worker thread, outside any event loop: the blocking client is right here.
        count = erase_prefix(
            open_store(settings.workspace_store_url), user_prefix(event.org_id, event.user_id)
        )
        log.info("erased %d snapshot objects of user %s in org %s", count, event.user_id, event.org_id)
    root = settings.workspace_root.resolve()
    target = (root / str(event.org_id) / str(event.user_id)).resolve()
    if root not in target.parents:
        raise ValueError(f"refusing to delete {target}: not under the workspace root")
    if target.exists():
        shutil.rmtree(target)
        log.info("erased workspaces of user %s in org %s", event.user_id, event.org_id)
