"""Actors by the event type they handle. Imported only after ``workers.broker.make_broker`` has
set the broker, because Dramatiq binds an actor to the broker current at declaration."""

from __future__ import annotations

import importlib
from collections.abc import Collection

from dramatiq import Actor

from events.envelope import EventType
from events.streams import WORK_ROUTES, WorkKind

# Where each event type's actor is declared (module of this package, actor). A worker imports only
# the modules of its own queues: the tools pool's MCP client alone was ~1.4 s of every sessions
# worker's start-up.
ACTORS: dict[EventType, tuple[str, str]] = {
    EventType.SESSION_REQUESTED: ("sessions", "run_session"),
    EventType.TOOL_CALL_REQUESTED: ("tools", "call_tool"),
    EventType.MCP_TEST_REQUESTED: ("tools", "test_mcp"),
    EventType.USER_ERASED: ("maintenance", "erase_workspaces"),
    EventType.MCP_OAUTH_REFRESH_REQUESTED: ("oauth", "refresh_oauth_grant"),
    EventType.WEBHOOK_RECEIVED: ("webhooks", "run_webhook_action"),
    EventType.WEBHOOK_NOTIFY_REQUESTED: ("webhooks", "notify_webhooks"),
}


def load_actors(kinds: Collection[WorkKind]) -> dict[EventType, Actor]:
    """The actors of the event types routed to ``kinds`` (with the others their modules declare,
    such as the default queue's webhook deliveries)."""
    loaded: dict[EventType, Actor] = {}
    for event_type, (module, name) in ACTORS.items():
        if WORK_ROUTES[event_type] in kinds:
            loaded[event_type] = getattr(importlib.import_module(f"workers.actors.{module}"), name)
    return loaded
