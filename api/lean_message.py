"""An accepted message (``POST /api/v1/sessions/{id}/message``, and the client key's ``POST /message``)
answered without Litestar's per-request handler machinery.

For each message Litestar builds a ``Request``, the handler's kwargs (the body read, decoded and
converted through the signature model), calls the handler and turns its ``Response`` into ASGI
messages: about a quarter of the ingress's CPU for a message whose work is one Redis pipeline.
This middleware is the innermost layer of those two routes, so the edge, the address limit, the
authentication and ``api.after_auth`` have run as for any request. It takes a request only when its
body is one the route would take as it stands: a declared length within the route's limit, read
whole, decoded by Litestar's JSON decoder and validated by the route's model as Litestar's pydantic
plugin validates it. The route's own functions then find the session and deliver the message, and
what they refuse (404, 409, 410, an empty message) goes through Litestar's exception handler as the
route's refusals do; the answer is the route's bytes. Anything else (no length, a larger or chunked
body, JSON the model refuses) is replayed to the route, which answers it as before.
``AGENTAPI_LEAN_MESSAGE_PATH=false`` sends every request to the route.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from litestar._asgi.utils import wrap_in_exception_handler
from litestar.serialization import decode_json
from litestar.types import (
    ASGIApp,
    HTTPReceiveMessage,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Scope,
    Send,
)
from prometheus_client import Counter
from pydantic import BaseModel

# The route's work for a valid body: the answer's bytes (sent as Litestar sends the route's bytes).
Answer = Callable[[HTTPScope, Any], Awaitable[bytes]]
TAKEN = Counter(
    "agentapi_lean_messages_total",
    "Messages taken by api/lean_message.py (answered without Litestar's handler machinery)",
    ["route"],
)
# Where the validated body waits for the exception-wrapped answer: our own scope key.
_DATA_KEY = "agentapi.lean_message"


def lean_message(route: str, model: type[BaseModel], answer: Answer) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware for ``route``, whose body is ``model`` and whose work, once the body is
    valid, is ``answer(scope, data)`` (the answer's body, sent as the route's ``application/json``)."""
    taken = TAKEN.labels(route=route)

    async def answered(scope: Scope, receive: Receive, send: Send) -> None:
        http: HTTPScope = scope  # type: ignore[assignment]  # the routes are HTTP's
        handler: Any = http["route_handler"]
        body = await answer(http, http.pop(_DATA_KEY))  # type: ignore[misc]  # our own scope key
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": handler.status_code,
            # A new list each time: the edge adds the correlation id to it.
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
        await send(start)
        end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
        await send(end)

    # The exception handling the route's own handler gets: its refusals are answered alike.
    handled = wrap_in_exception_handler(answered)

    def middleware(app: ASGIApp) -> ASGIApp:
        async def lean(scope: Scope, receive: Receive, send: Send) -> None:
            if not scope["app"].state["resources"].settings.lean_message_path:
                await app(scope, receive, send)
                return
            body, consumed = await _whole_body(scope, receive)
            data = _valid(scope, model, body) if body is not None else None
            if data is None:
                await app(scope, _replay(consumed, receive), send)
                return
            taken.inc()
            scope[_DATA_KEY] = data  # type: ignore[literal-required]  # our own scope key, read by answered
            await handled(scope, receive, send)

        return lean

    return middleware


async def _whole_body(scope: Scope, receive: Receive) -> tuple[bytes | None, list[HTTPReceiveMessage]]:
    """The body, when it came whole with a declared length within the route's limit (else None),
    and the messages read for it (to replay to the route)."""
    declared = None
    for name, value in scope["headers"]:
        lowered = name.lower()
        if lowered == b"content-length":
            if declared is not None:
                return None, []
            declared = value
        elif lowered == b"transfer-encoding":
            return None, []
    if declared is None or not declared.isdigit():
        return None, []
    length = int(declared)
    handler: Any = scope["route_handler"]
    limit = handler.resolve_request_max_body_size()
    if limit is not None and length > limit:
        return None, []
    consumed: list[HTTPReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message: HTTPReceiveMessage = await receive()  # type: ignore[assignment]  # an HTTP route's
        consumed.append(message)
        if message["type"] != "http.request":
            return None, consumed
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > length:
            return None, consumed
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size != length:
        return None, consumed
    return b"".join(chunks), consumed


def _valid(scope: Scope, model: type[BaseModel], body: bytes) -> BaseModel | None:
    """The body as the route's ``data``, when Litestar would make it one: its decoder, then the
    pydantic plugin's ``model_validate`` (not strict, the plugin's default). None for anything the
    route refuses (it says why)."""
    handler: Any = scope["route_handler"]
    try:
        value = decode_json(body or b"null", type_decoders=handler.resolve_type_decoders())
        return model.model_validate(value, strict=False)
    except Exception:  # whatever the decoder or the model raise, the route answers it as before
        return None


def _replay(consumed: list[HTTPReceiveMessage], receive: Receive) -> Receive:
    if not consumed:
        return receive
    pending = deque(consumed)

    async def replayed() -> HTTPReceiveMessage:
        if pending:
            return pending.popleft()
        return await receive()  # type: ignore[return-value]  # an HTTP route's

    return replayed
