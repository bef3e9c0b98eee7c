"""The ``default`` pool's housekeeping: files that must go when their owner's data goes."""

from __future__ import annotations

import logging
import shutil

import dramatiq

from events.envelope import Event
from workers.context import current, working_on

log = logging.getLogger(__name__)


@dramatiq.actor(queue_name="default", actor_name="erase_workspaces", max_retries=5)
def erase_workspaces(envelope: str) -> None:
    """Delete an erased user's workspaces in one organization (idempotent: gone is gone)."""
    with working_on(Event.from_wire(envelope)) as event:
        _erase(event)


def _erase(event: Event) -> None:
    root = current().settings.workspace_root.resolve()
    target = (root / str(event.org_id) / str(event.user_id)).resolve()
    if root not in target.parents:
        raise ValueError(f"refusing to delete {target}: not under the workspace root")
    if target.exists():
        shutil.rmtree(target)
        log.info("erased workspaces of user %s in org %s", event.user_id, event.org_id)
