"""The HTTP plumbing the fake model APIs share: a threaded server on 127.0.0.1 that records every
request (method, path, headers, JSON body) and lets a subclass answer it as JSON or as
server-sent events."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Reply = str | Callable[[str], str]
# A user text starting with this is answered one chunk every SLOW_CHUNK_SECONDS (for cancelling a reply).
SLOW_PREFIX = "Slowly"
SLOW_CHUNK_SECONDS = 0.5


def chunk_pause(user_text: str) -> float:
    """Seconds between a reply's streamed chunks."""
    return SLOW_CHUNK_SECONDS if user_text.startswith(SLOW_PREFIX) else 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def route(self) -> str:
        return self.path.split("?")[0]


class Responder:
    """What a fake's ``answer`` writes with: one JSON body or a stream of SSE events."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._handler = handler

    def json(self, status: int, payload: dict[str, Any] | list[Any]) -> None:
        data = json.dumps(payload).encode()
        self._handler.send_response(status)
        self._handler.send_header("content-type", "application/json")
        self._handler.send_header("content-length", str(len(data)))
        self._handler.end_headers()
        self._handler.wfile.write(data)

    def sse(self, events: Iterable[tuple[str | None, dict[str, Any]]], done: bool = False) -> None:
        """Events as ``(name, payload)``; a None name sends a bare ``data:`` line. ``done`` ends
        the stream with OpenAI's ``data: [DONE]``."""
        self._handler.send_response(200)
        self._handler.send_header("content-type", "text/event-stream")
        self._handler.send_header("cache-control", "no-cache")
        self._handler.send_header("connection", "close")
        self._handler.end_headers()
        self._handler.close_connection = True
        try:
            for name, payload in events:
                head = f"event: {name}\n" if name else ""
                self._handler.wfile.write(f"{head}data: {json.dumps(payload)}\n\n".encode())
                self._handler.wfile.flush()
            if done:
                self._handler.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading mid-reply: a cancelled turn does just that


class FakeModelServer:
    def __init__(self, reply: Reply = "Hello from the fake model.") -> None:
        self.reply: Reply = reply
        self.requests: list[Recorded] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def text_for(self, user_text: str) -> str:
        return self.reply(user_text) if callable(self.reply) else self.reply

    def answer(self, request: Recorded, respond: Responder) -> None:
        respond.json(404, {"error": {"message": f"no route {request.method} {request.route}"}})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = Recorded(self.command, self.path, headers, body)
                fake.requests.append(request)
                fake.answer(request, Responder(self))

            do_GET = do_POST = _serve

            def do_HEAD(self) -> None:
                # A CLI may check that its base URL is reachable before the first call.
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        return Handler
