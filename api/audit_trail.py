"""Every mutating request and every refused one leaves an ``audit.recorded`` event.

Recorded by the edge middleware (api.edge), so no route can forget it: before the response starts it publishes who
(the verified principal), what (method and route template), which resource (the route's first
path parameter), the outcome from the status code, the client's IP and user agent, and the
correlation id. Requests refused before a principal is known (401) name no organization, so they
cannot join an organization's chain; they are logged instead, unless a public route (a signed
webhook delivery) has named the organization whose resource the request is for (``audit_under``).

An action is acknowledged only once its record is kept: while the audit stream (Redis) is
unreachable the record is stored in the chain directly (``services.audit_log``, the writer's own
code and lock), and a success whose record can be kept nowhere is answered 503 instead (``refuse``).

A route whose action is itself a Redis write may send the record with it (``along``): one round trip
per request instead of two. The edge then records nothing more for that status, and records as
usual any other (the write failed).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, HTTPScope, Scope, Send
from prometheus_client import Counter
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from api.auth import Principal
from api.problems import OUTAGE_RETRY_AFTER_SECONDS, PROBLEM_MEDIA_TYPE, problem_body, problem_type
from events.audit import AuditArgs, audit_event, audit_wire
from events.batch import Queue
from events.envelope import EventType
from events.publisher import queue_publish, queue_publish_wire
from schemas.db import PlatformConnectionMissing
from services.audit_log import write_batch
from services.context import current_correlation_id
from services.outages import default_outage_exceptions

log = logging.getLogger("agentapi.audit")

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Refused public requests (bad signatures) to one resource: one audit row per window, the rest counted.
REFUSAL_WINDOW_SECONDS = 60
REFUSED_PUBLIC = Counter(
    "agentapi_public_requests_refused_total",
    "Refused (401) public requests beyond the first of each window, not stored one audit row each",
    ["action"],
)
DROPPED = Counter(
    "agentapi_audit_events_dropped_total",
    "Audit events neither published nor stored (Redis and PostgreSQL both unreachable); a success"
    " whose record is dropped is answered 503 instead",
    ["outcome"],
)
# Why an audit row cannot be stored directly: the database is unreachable, refuses the row for what
# it is (an organization that does not exist), or no platform connection is configured to chain it.
UNSTORABLE: tuple[type[BaseException], ...] = (
    *default_outage_exceptions(),
    DBAPIError,
    PlatformConnectionMissing,
)
# Where a public route leaves the organization a request without a principal is recorded under.
PUBLIC_ORG_KEY = "agentapi.audit_org_id"
# The request's user agent, left by the edge for ``along``.
USER_AGENT_KEY = "agentapi.user_agent"
# The status whose record the route sent with its action (``along``).
ALONG_KEY = "agentapi.audit_along"


def audit_under(scope: Scope, org_id: UUID) -> None:
    """Record this request, which has no principal, in ``org_id``'s trail (with no actor): for
    public routes, once they know whose resource the request is for, so that what they refuse or
    accept from then on (a bad signature, a replay, an accepted delivery) is on record."""
    scope[PUBLIC_ORG_KEY] = org_id  # type: ignore[literal-required]  # ASGI lets middleware add scope keys; Litestar's TypedDict does not list ours


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    return "failure" if status < 500 else "error"


def _route(scope: Scope) -> tuple[str, str | None, str | None]:
    """(route template, resource type, resource id) of the handled request."""
    handler = scope.get("route_handler")
    template = scope["path"]
    if handler is not None and getattr(handler, "paths", None):
        template = scope.get("path_template") or sorted(handler.paths)[0]
    principal = scope.get("user")
    if isinstance(principal, Principal) and principal.key_session_id is not None:
        # The root-path alias names no session in its path: the client key does.
        return template, "sessions", str(principal.key_session_id)
    params = scope.get("path_params") or {}
    resource_id = str(next(iter(params.values()))) if params else None
    parts = [p for p in scope["path"].split("/") if p][2:]  # after /api/v1
    resource_type = parts[0] if parts else None
    return template, resource_type, resource_id


def _credential(principal: Any) -> dict[str, str]:
    """How a request authenticated, where it was not a JWT: a session client key."""
    if isinstance(principal, Principal) and principal.key_session_id is not None:
        return {"via": "session_client_key"}
    return {}


async def _first_refusal(scope: Scope, org_id: UUID, resource_id: str | None) -> bool:
    """Whether this is the first refused (401) public request for the resource in this window:
    300 badly signed deliveries wrote 300 audit rows, a way to flood a tenant's trail. The first
    of each window is stored; the rest are counted (``agentapi_public_requests_refused_total``)."""
    try:
        res = scope["app"].state["resources"]
        key = res.names.audit_refused(org_id, resource_id)
        first = await res.redis.set(key, "1", nx=True, ex=REFUSAL_WINDOW_SECONDS)
    except (RedisError, OSError, KeyError):
        return True
    return bool(first)


def audited(method: str, status: int) -> bool:
    """Whether the request goes on the audit trail: what changes something, and every refusal."""
    return method in MUTATING or status in (401, 403)


def along(scope: HTTPScope) -> Queue | None:
    """The commands that publish the request's record as answered with its route's success status,
    for the route to send with its own write; once they are queued, the edge records nothing more
    for that status. None where the edge must record it (no verified tenant)."""
    principal: Any = scope.get("user")
    if not isinstance(principal, Principal) or principal.org_id is None or USER_AGENT_KEY not in scope:
        return None
    res = scope["app"].state["resources"]
    handler: Any = scope["route_handler"]
    status, method = handler.status_code, scope["method"]
    who = (principal.org_id, principal.user_id, principal.role)
    # Taken now: the queue runs in the batch's task, outside this request's context.
    correlation_id = current_correlation_id()

    def queue(pipe: Pipeline) -> None:
        user_agent = scope[USER_AGENT_KEY]  # type: ignore[literal-required]  # our own scope key, set by api.edge
        wire = audit_wire(**_record(scope, method, _route(scope), status, who, user_agent, correlation_id))
        queue_publish_wire(pipe, res.names, EventType.AUDIT_RECORDED, wire, counts=res.batch)
        scope[ALONG_KEY] = status  # type: ignore[literal-required]  # our own scope key, read by api.edge

    return queue


def not_along(scope: Scope) -> None:
    """Redis carried out the route's write but refused the record sent with it (``along``): the
    edge records the request as for any other route (stored directly if the stream refuses it)."""
    scope.pop(ALONG_KEY, None)  # type: ignore[misc]  # our own scope key, set by along


def recorded_along(scope: Scope, status: int) -> bool:
    """Whether the route sent the request's record for ``status`` with its action."""
    return scope.get(ALONG_KEY) == status


def _record(
    scope: Scope,
    method: str,
    route: tuple[str, str | None, str | None],
    status: int,
    who: tuple[UUID, UUID | None, str],
    user_agent: str | None,
    correlation_id: str | None,
) -> AuditArgs:
    """The record of the request (``route``: ``_route``'s) by ``who`` (organization, actor, role):
    ``audit_event``'s arguments."""
    template, resource_type, resource_id = route
    org_id, actor, role = who
    client = scope.get("client")
    return {
        "org_id": org_id,
        "actor_user_id": actor,
        "action": f"{method} {template}"[:100],
        "outcome": outcome_of(status),
        "resource_type": resource_type,
        "resource_id": resource_id,
        "details": {"status": status, "role": role, **_credential(scope.get("user"))},
        "ip": client[0] if client else None,
        "user_agent": user_agent,
        "correlation_id": correlation_id,
    }


async def record(scope: Scope, method: str, status: int, user_agent: str | None) -> bool:
    """Record the request; whether its record is kept (published, or stored directly when the
    stream is unreachable). What names no organization is only logged: nothing to keep (True)."""
    principal: Any = scope.get("user")
    route = _route(scope)
    action = f"{method} {route[0]}"
    who: tuple[UUID, UUID | None, str]
    if isinstance(principal, Principal) and principal.org_id is not None:
        who = (principal.org_id, principal.user_id, principal.role)
    elif scope.get(PUBLIC_ORG_KEY) is not None:
        who = (scope[PUBLIC_ORG_KEY], None, "public")  # type: ignore[literal-required]  # our own scope key, see audit_under
        if status == 401 and not await _first_refusal(scope, who[0], route[2]):
            REFUSED_PUBLIC.labels(action=action[:100]).inc()
            return True
    else:
        client = scope.get("client")
        ip = client[0] if client else None
        log.warning("%s from %s (%d) names no verified tenant to record it under", action, ip, status)
        return True
    event = audit_event(**_record(scope, method, route, status, who, user_agent, current_correlation_id()))
    res = scope["app"].state["resources"]
    try:
        await res.batch.execute(lambda pipe: queue_publish(pipe, res.names, event, counts=res.batch))
        return True
    except (RedisError, OSError) as exc:
        published = exc
    try:
        await write_batch(res.engine, [event])
    except UNSTORABLE as exc:
        log.error("audit event for %s kept nowhere: %s; then %s", action, published, exc)
        DROPPED.labels(outcome=outcome_of(status)).inc()
        return False
    log.warning("audit event for %s stored directly: the stream is unreachable (%s)", action, published)
    return True


async def refuse(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    """A 503 in place of a success whose audit record could not be kept anywhere (the action itself
    has been done: the client's retry may find it done)."""
    body = problem_body(
        503,
        "the audit record of this request could not be stored; retry later",
        type_=problem_type("audit-unavailable"),
    )
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"retry-after", str(OUTAGE_RETRY_AFTER_SECONDS).encode()),
            *headers,
        ],
    }
    answer: HTTPResponseBodyEvent = {
        "type": "http.response.body",
        "body": json.dumps(body).encode(),
        "more_body": False,
    }
    await send(start)
    await send(answer)
