"""A small real OpenAI API on 127.0.0.1 for running agent CLIs offline (Codex, Aider, Goose, Droid).

``POST /v1/responses`` streams the events the real API sends for a plain text answer
(response.created, output_item.added, output_text.delta…, output_item.done, response.completed);
``POST /v1/chat/completions`` answers with chunks (``stream: true``) or one completion;
``GET /v1/models`` lists one model. Every request is recorded; anything else is a 404.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from tests.fakes.model_server import FakeModelServer, Recorded, Responder, chunk_pause

MODEL = "gpt-fake"


def last_user_text(body: dict[str, Any]) -> str:
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if item.get("role") != "user":
            continue
        content = item.get("content")
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content or []]
        # Codex sends its environment context and AGENTS.md as tagged user messages of their own.
        plain = [t for t in texts if t and not t.lstrip().startswith(("<", "# AGENTS.md"))]
        if plain:
            return plain[-1]
    return ""


def tool_result_text(body: dict[str, Any]) -> str | None:
    """What a function returned, when the input's last item is its output."""
    items = body.get("input")
    if not isinstance(items, list) or not items or items[-1].get("type") != "function_call_output":
        return None
    output = items[-1].get("output")
    if isinstance(output, list):
        output = " ".join(part.get("text", "") for part in output)
    return f"TOOL-RESULT: {output}"


def _function_call(name: str, arguments: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """A response whose one output is a call of ``name`` (``namespace.function`` for a namespaced tool)."""
    response = {"id": "resp_fake_0002", "object": "response", "model": MODEL, "status": "in_progress"}
    yield "response.created", {"type": "response.created", "response": response}
    namespace, _, function = name.rpartition(".")
    item: dict[str, Any] = {
        "type": "function_call",
        "id": "fc_fake_0001",
        "call_id": "call_fake_0001",
        "name": function,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }
    if namespace:
        item["namespace"] = namespace
    yield (
        "response.output_item.added",
        {"type": "response.output_item.added", "output_index": 0, "item": item},
    )
    yield "response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    completed = {**response, "status": "completed", "output": [item], "usage": usage}
    yield "response.completed", {"type": "response.completed", "response": completed}


def _chat_chunks(text: str) -> Iterator[tuple[str | None, dict[str, Any]]]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
    yield None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    for index in range(0, len(text), 12):
        yield None, {**base, "choices": [{"index": 0, "delta": {"content": text[index : index + 12]}}]}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    yield None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}


def _chat_completion(text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _events(text: str, pause: float = 0.0) -> Iterator[tuple[str | None, dict[str, Any]]]:
    item_id = "msg_fake_0001"
    response = {"id": "resp_fake_0001", "object": "response", "model": MODEL, "status": "in_progress"}
    yield "response.created", {"type": "response.created", "response": response}
    item: dict[str, Any] = {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    yield (
        "response.output_item.added",
        {"type": "response.output_item.added", "output_index": 0, "item": item},
    )
    for index in range(0, len(text), 12):
        if pause and index:
            time.sleep(pause)
        delta = {
            "type": "response.output_text.delta",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": text[index : index + 12],
        }
        yield "response.output_text.delta", delta
    done = {
        **item,
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    yield "response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": done}
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    completed = {**response, "status": "completed", "output": [done], "usage": usage}
    yield "response.completed", {"type": "response.completed", "response": completed}


class FakeOpenAI(FakeModelServer):
    # User texts answered with a function call instead of text: text → (function name, arguments).
    tool_uses: dict[str, tuple[str, dict[str, Any]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool_uses = {}

    def response_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.route == "/v1/responses"]

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.route == "/v1/chat/completions"]

    def answer(self, request: Recorded, respond: Responder) -> None:
        if request.method == "GET" and request.route == "/v1/models":
            respond.json(
                200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fake"}]}
            )
        elif request.method == "POST" and request.route == "/v1/responses":
            user_text = last_user_text(request.body)
            result = tool_result_text(request.body)
            if result is not None:
                respond.sse(_events(result))
            elif user_text in self.tool_uses:
                respond.sse(_function_call(*self.tool_uses[user_text]))
            else:
                respond.sse(_events(self.text_for(user_text), chunk_pause(user_text)))
        elif request.method == "POST" and request.route == "/v1/chat/completions":
            text = self.text_for(last_user_text({"input": request.body.get("messages")}))
            if request.body.get("stream"):
                respond.sse(_chat_chunks(text), done=True)
            else:
                respond.json(200, _chat_completion(text))
        else:
            super().answer(request, respond)
