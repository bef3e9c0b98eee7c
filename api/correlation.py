"""Correlation ids: taken from the caller's X-Correlation-ID (or X-Request-ID) or made here,
carried into every event the request publishes and echoed on the response."""

from __future__ import annotations

import re

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from events.envelope import new_event_id
from services.observability import correlation_id

HEADER = "x-correlation-id"
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def correlation_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = (headers.get(HEADER.encode()) or headers.get(b"x-request-id") or b"").decode("latin-1")
        value = given if _ACCEPTED.match(given) else new_event_id()
        token = correlation_id.set(value)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableScopeHeaders.from_message(message)[HEADER] = value
            await send(message)

        try:
            await app(scope, receive, send_with_header)
        finally:
            correlation_id.reset(token)

    return middleware
