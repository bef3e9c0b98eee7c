"""A small real Gemini API (generativelanguage v1beta) on 127.0.0.1 for running Gemini CLI offline.

Answers ``models/{model}:streamGenerateContent?alt=sse`` the way the real API streams (candidate
chunks, the last with ``finishReason: STOP`` and usage), ``:generateContent`` and ``:countTokens``;
404s anything else. Every request is recorded. A user text in ``tool_uses`` is answered with that
function call; the function's response, when it comes back, with ``TOOL-RESULT: <its output>``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

from tests.fakes.model_server import FakeModelServer, Recorded, Responder, chunk_pause

MODEL_CALL = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<method>\w+)$")


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents", [])):
        if content.get("role") != "user":
            continue
        texts = [part["text"] for part in content.get("parts", []) if "text" in part]
        if texts:
            return texts[-1]
    return ""


def tool_result_text(body: dict[str, Any]) -> str | None:
    """What a function returned, when the conversation's last turn is its response."""
    contents = body.get("contents") or [{}]
    for part in contents[-1].get("parts", []):
        if "functionResponse" in part:
            response = part["functionResponse"].get("response", {})
            output = response.get("output", response.get("error", response))
            return f"TOOL-RESULT: {output if isinstance(output, str) else json.dumps(output)}"
    return None


def _function_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    part = {"functionCall": {"name": name, "args": arguments}}
    chunk = _chunk("", finished=True)
    chunk["candidates"][0]["content"]["parts"] = [part]
    return chunk


def _chunk(text: str, finished: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-fake"}
    if finished:
        candidate["finishReason"] = "STOP"
        chunk["usageMetadata"] = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    return chunk


def _stream(text: str, pause: float) -> Iterator[tuple[str | None, dict[str, Any]]]:
    pieces = [text[i : i + 16] for i in range(0, len(text), 16)] or [""]
    for index, piece in enumerate(pieces):
        if pause and index:
            time.sleep(pause)
        yield None, _chunk(piece, index == len(pieces) - 1)


class FakeGemini(FakeModelServer):
    # User texts answered with a function call instead of text: text → (function name, arguments).
    tool_uses: dict[str, tuple[str, dict[str, Any]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool_uses = {}

    def generate_requests(self) -> list[Recorded]:
        return [r for r in self.requests if (m := MODEL_CALL.match(r.route)) and "Generate" in m["method"]]

    def answer(self, request: Recorded, respond: Responder) -> None:
        call = MODEL_CALL.match(request.route)
        if request.method != "POST" or call is None:
            respond.json(404, {"error": {"code": 404, "message": request.route, "status": "NOT_FOUND"}})
            return
        if call["method"] == "countTokens":
            respond.json(200, {"totalTokens": 42})
            return
        user_text = last_user_text(request.body)
        result = tool_result_text(request.body)
        text = result if result is not None else self.text_for(user_text)
        if call["method"] == "streamGenerateContent" and result is None and user_text in self.tool_uses:
            respond.sse([(None, _function_call(*self.tool_uses[user_text]))])
        elif call["method"] == "generateContent":
            respond.json(200, _chunk(text, finished=True))
        elif call["method"] == "streamGenerateContent":
            respond.sse(_stream(text, chunk_pause(user_text) if result is None else 0.0))
        else:
            respond.json(404, {"error": {"code": 404, "message": call["method"], "status": "NOT_FOUND"}})
