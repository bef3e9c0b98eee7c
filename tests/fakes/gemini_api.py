"""A small real Gemini API (generativelanguage v1beta) on 127.0.0.1 for running Gemini CLI offline.

Answers ``models/{model}:streamGenerateContent?alt=sse`` the way the real API streams (candidate
chunks, the last with ``finishReason: STOP`` and usage), ``:generateContent`` and ``:countTokens``;
404s anything else. Every request is recorded.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.model_server import FakeModelServer, Recorded, Responder

MODEL_CALL = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<method>\w+)$")


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents", [])):
        if content.get("role") != "user":
            continue
        texts = [part["text"] for part in content.get("parts", []) if "text" in part]
        if texts:
            return texts[-1]
    return ""


def _chunk(text: str, finished: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-fake"}
    if finished:
        candidate["finishReason"] = "STOP"
        chunk["usageMetadata"] = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    return chunk


class FakeGemini(FakeModelServer):
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
        text = self.text_for(last_user_text(request.body))
        if call["method"] == "generateContent":
            respond.json(200, _chunk(text, finished=True))
        elif call["method"] == "streamGenerateContent":
            pieces = [text[i : i + 16] for i in range(0, len(text), 16)] or [""]
            respond.sse((None, _chunk(piece, i == len(pieces) - 1)) for i, piece in enumerate(pieces))
        else:
            respond.json(404, {"error": {"code": 404, "message": call["method"], "status": "NOT_FOUND"}})
