"""A small real Anthropic Messages API on 127.0.0.1 for running agent CLIs offline in tests.

Streams the same server-sent events the real API sends (message_start … message_stop), answers
token counting, records every request (path, headers, body) and 404s anything else.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | Callable[[str], str]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [part.get("text", "") for part in content or [] if part.get("type") == "text"]
        # Claude Code adds <system-reminder> parts; the user's words are the last plain text.
        plain = [t for t in texts if not t.lstrip().startswith("<")]
        return (plain or texts or [""])[-1]
    return ""


class FakeAnthropic:
    def __init__(self, reply: Reply = "Hello from the fake model.") -> None:
        self.reply: Reply = reply
        self.requests: list[Recorded] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def text_for(self, body: dict[str, Any]) -> str:
        return self.reply(last_user_text(body)) if callable(self.reply) else self.reply

    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.requests.append(Recorded("GET", self.path, dict(self.headers)))
                self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                fake.requests.append(Recorded("POST", self.path, dict(self.headers), body))
                path = self.path.split("?")[0]
                if path == "/v1/messages/count_tokens":
                    self._json(200, {"input_tokens": 42})
                elif path == "/v1/messages":
                    text = fake.text_for(body)
                    if body.get("stream"):
                        self._stream(body, text)
                    else:
                        self._json(200, _message(body, text))
                else:
                    self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})

            def _stream(self, body: dict[str, Any], text: str) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                start = _message(body, "")
                start["usage"] = {"input_tokens": 10, "output_tokens": 1}
                events: list[tuple[str, dict[str, Any]]] = [
                    ("message_start", {"type": "message_start", "message": start}),
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        },
                    ),
                ]
                for index in range(0, len(text), 8):
                    delta = {"type": "text_delta", "text": text[index : index + 8]}
                    events.append(
                        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
                    )
                events += [
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    (
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": max(1, len(text) // 4)},
                        },
                    ),
                    ("message_stop", {"type": "message_stop"}),
                ]
                for name, payload in events:
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())
                    self.wfile.flush()
                self.close_connection = True

        return Handler


def _message(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "msg_fake_0001",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-fake"),
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": "end_turn" if text else None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": max(1, len(text) // 4)},
    }
