"""A small real Anthropic Messages API on 127.0.0.1 for running agent CLIs offline in tests.

Streams the same server-sent events the real API sends (message_start … message_stop), answers
token counting, records every request (path, headers, body) and 404s anything else. Scripted
turns for tool use: a user text in ``tool_uses`` is answered with that tool call, a tool's result
with ``TOOL-RESULT: <its text>`` (``TOOL-ERROR: …`` for an error); a user text starting with
``SLOW_PREFIX`` streams its reply one chunk every ``SLOW_CHUNK_SECONDS`` (for cancelling a reply).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from tests.fakes.model_server import FakeModelServer, Recorded, Responder, chunk_pause


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


def tool_result_text(body: dict[str, Any]) -> str | None:
    """The result a tool call's answer carries, when the conversation's last message is one."""
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content")
    if messages[-1].get("role") != "user" or not isinstance(content, list):
        return None
    if any(
        part.get("type") == "text" and not part.get("text", "").lstrip().startswith("<") for part in content
    ):
        return None  # the user's next words (Claude Code may send them with the last tool result)
    for part in content:
        if part.get("type") == "tool_result":
            inner = part.get("content")
            text = inner if isinstance(inner, str) else " ".join(b.get("text", "") for b in inner or [])
            return f"TOOL-ERROR: {text}" if part.get("is_error") else f"TOOL-RESULT: {text}"
    return None


def _tool_use_events(
    body: dict[str, Any], name: str, arguments: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    start = _message(body, "")
    yield "message_start", {"type": "message_start", "message": start}
    block = {
        "type": "tool_use",
        "id": f"toolu_fake_{len(body.get('messages', []))}",
        "name": name,
        "input": {},
    }
    yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    delta = {"type": "input_json_delta", "partial_json": json.dumps(arguments)}
    yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 5},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _events(
    body: dict[str, Any], text: str, pause: float = 0.0
) -> Iterator[tuple[str | None, dict[str, Any]]]:
    start = _message(body, "")
    start["usage"] = {"input_tokens": 10, "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    block = {"type": "text", "text": ""}
    yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    for index in range(0, len(text), 8):
        if pause and index:
            time.sleep(pause)
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
    # User texts answered with a tool call instead of text: text → (tool name, arguments).
    tool_uses: dict[str, tuple[str, dict[str, Any]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool_uses = {}

    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.route == "/v1/messages"]

    def answer(self, request: Recorded, respond: Responder) -> None:
        if request.method == "POST" and request.route == "/v1/messages/count_tokens":
            respond.json(200, {"input_tokens": 42})
        elif request.method == "POST" and request.route == "/v1/messages":
            user_text = last_user_text(request.body)
            result = tool_result_text(request.body)
            text = result if result is not None else self.text_for(user_text)
            if request.body.get("stream") and result is None and user_text in self.tool_uses:
                respond.sse(_tool_use_events(request.body, *self.tool_uses[user_text]))
            elif request.body.get("stream"):
                pause = chunk_pause(user_text) if result is None else 0.0
                respond.sse(_events(request.body, text, pause))
            else:
                respond.json(200, _message(request.body, text))
        else:
            respond.json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": request.route}}
            )
