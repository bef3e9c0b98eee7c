"""A small real Anthropic Messages API on 127.0.0.1 for running agent CLIs offline in tests.

Streams the same server-sent events the real API sends (message_start … message_stop), answers
token counting, records every request (path, headers, body) and 404s anything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.fakes.model_server import FakeModelServer, Recorded, Responder


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


def _events(body: dict[str, Any], text: str) -> Iterator[tuple[str | None, dict[str, Any]]]:
    start = _message(body, "")
    start["usage"] = {"input_tokens": 10, "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    block = {"type": "text", "text": ""}
    yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    for index in range(0, len(text), 8):
        delta = {"type": "text_delta", "text": text[index : index + 8]}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": max(1, len(text) // 4)},
        },
    )
    yield "message_stop", {"type": "message_stop"}


class FakeAnthropic(FakeModelServer):
    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.route == "/v1/messages"]

    def answer(self, request: Recorded, respond: Responder) -> None:
        if request.method == "POST" and request.route == "/v1/messages/count_tokens":
            respond.json(200, {"input_tokens": 42})
        elif request.method == "POST" and request.route == "/v1/messages":
            text = self.text_for(last_user_text(request.body))
            if request.body.get("stream"):
                respond.sse(_events(request.body, text))
            else:
                respond.json(200, _message(request.body, text))
        else:
            respond.json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": request.route}}
            )
