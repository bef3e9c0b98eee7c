"""The OpenAPI document where coder/agentapi clients look for it: ``/openapi.json`` beside the
API's base URL (the root, or a session's URL). ``/schema`` keeps serving it with its viewers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request, get


def _document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return request.app.openapi_schema.to_schema()


@get("/openapi.json", sync_to_thread=False, security=[{}], tags=["operations"], include_in_schema=False)
def openapi_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    return _document(request)


@get(
    "/api/v1/sessions/{session_id:uuid}/openapi.json",
    sync_to_thread=False,
    tags=["sessions"],
    include_in_schema=False,
)
def session_openapi_document(session_id: UUID, request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The same document under a session's URL, which agentapi clients take as their base URL."""
    return _document(request)
