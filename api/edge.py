"""The request's edge, in one middleware: the header-size limit (431), the HTTP metrics, the
correlation id, the audit trail and the query-text check (422), in that order.

They were five middlewares, and a profile under wrk put the stack of them (and Litestar's
Prometheus middleware building a ``Request`` and looking up five label sets per request) first
among the message path's costs. As one, the headers are read once and the response's start
passes through one wrapper. What each step does and refuses is unchanged; see api.limits,
api.metrics, api.correlation and api.audit_trail.
"""

from __future__ import annotations

import time

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.audit_trail import USER_AGENT_KEY, audited, record, recorded_along, refuse
from api.correlation import HEADER, accepted_or_new
from api.limits import check_header_size, check_query_text
from api.metrics import HTTP
from schemas.settings import GATEWAY_PATH
from services.observability import correlation_id

_CORRELATION = HEADER.encode()
_METRICS_PATH = "/metrics"
_GATEWAY_RAW = GATEWAY_PATH.encode()


def edge_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        size = 0
        given = request_id = user_agent = None
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            lowered = name.lower()
            if lowered == _CORRELATION:
                given = value
            elif lowered == b"x-request-id":
                request_id = value
            elif lowered == b"user-agent" and user_agent is None:
                user_agent = value
        check_header_size(size, scope["app"].state["resources"].settings.max_header_bytes)

        path = scope["path"]
        measured = not path.startswith(_METRICS_PATH)
        method = scope["method"]
        template = scope.get("path_template") or path
        if measured:
            running = HTTP.running(method, template)
            running.inc()
        started = time.perf_counter()
        cid = accepted_or_new(given or request_id)
        token = correlation_id.set(cid)
        status = 500
        # The router has already cut a mount's prefix from scope['path'] (the gateway's calls
        # reached the audit trail as '/{session_id}/'): the request's own path says where it went.
        audit = not (scope.get("raw_path") or path.encode()).startswith(_GATEWAY_RAW)
        agent = user_agent.decode("latin-1") if user_agent else None
        if audit:
            scope[USER_AGENT_KEY] = agent  # type: ignore[literal-required]  # our own scope key, for api.audit_trail.along
        recorded = refused = False

        async def send_with_edge(message: Message) -> None:
            nonlocal status, recorded, refused
            if message["type"] == "http.response.start":
                status = int(message["status"])
                _add_correlation(message, cid)
                if audit and audited(method, status) and not recorded_along(scope, status):
                    # Before the answer leaves: an action is acknowledged only once its record is kept.
                    recorded = True
                    if not await record(scope, method, status, agent) and status < 400:
                        refused, status = True, 503
                        await refuse(send, [(_CORRELATION, cid.encode())])
            if not refused:
                await send(message)

        try:
            if scope.get("query_string"):
                check_query_text(scope["query_string"])
            await app(scope, receive, send_with_edge)
        except Exception as exc:
            # Raised errors are answered further out; their status is the exception's.
            status = int(getattr(exc, "status_code", 500))
            raise
        finally:
            try:
                if audit and not recorded and audited(method, status) and not recorded_along(scope, status):
                    await record(scope, method, status, agent)
            finally:
                correlation_id.reset(token)
                if measured:
                    running.dec()
                    HTTP.done(method, template, status, time.perf_counter() - started)

    return middleware


def _add_correlation(message: Message, cid: str) -> None:
    """The correlation id on the response's start, replacing any the app set. Appended directly
    when there is none (always, so far): ``MutableScopeHeaders``'s search and item assignment were
    ~5 % of an accepted message's CPU."""
    headers = message.get("headers")
    if type(headers) is list and not any(name.lower() == _CORRELATION for name, _ in headers):
        headers.append((_CORRELATION, cid.encode("latin-1")))
    else:
        MutableScopeHeaders.from_message(message)[HEADER] = cid
