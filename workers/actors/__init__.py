"""Actors by the event type they handle. Imported only after ``workers.broker.make_broker`` has
set the broker, because Dramatiq binds an actor to the broker current at declaration."""

from __future__ import annotations

from dramatiq import Actor

from events.envelope import EventType


def load_actors() -> dict[EventType, Actor]:
    from workers.actors import maintenance, oauth, sessions, tools, webhooks

    return {
        EventType.SESSION_REQUESTED: sessions.run_session,
        EventType.TOOL_CALL_REQUESTED: tools.call_tool,
        EventType.MCP_TEST_REQUESTED: tools.test_mcp,
        EventType.USER_ERASED: maintenance.erase_workspaces,
        EventType.MCP_OAUTH_REFRESH_REQUESTED: oauth.refresh_oauth_grant,
        EventType.WEBHOOK_RECEIVED: webhooks.run_webhook_action,
        EventType.WEBHOOK_NOTIFY_REQUESTED: webhooks.notify_webhooks,
    }
