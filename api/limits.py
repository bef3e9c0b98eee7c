"""Request shape limits that Litestar does not enforce by itself.

Body size needs nothing here: Litestar 2.25's ``request_max_body_size`` (app, router, controller or handler)
rejects a body by its ``Content-Length`` before reading and by the counted bytes of a chunked body while
reading, raising ``RequestEntityTooLarge``, which :mod:`api.problems` turns into a 413 naming the limit.

What Litestar does not do is refuse a body in the wrong format: a handler with a JSON ``data`` parameter
parses any body as JSON whatever its ``Content-Type``. :func:`check_json_content_type` answers 415
when such a handler gets a body declared as something else (``text/plain``, a form, ...). A request without a
``Content-Type`` is still parsed as JSON, for curl's sake.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, ValidationException

from api.problems import UNSTORABLE, UNSTORABLE_REASON, UnsupportedMediaTypeException

if TYPE_CHECKING:
    from litestar.types import Scope

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_JSON_MEDIA = re.compile(r"^application/(?:[\w.+-]+\+)?json$")


def _expects_json_body(route_handler: Any) -> bool:
    cached = getattr(route_handler, "_agentapi_expects_json", None)
    if cached is not None:
        return bool(cached)
    try:
        data = route_handler.parsed_fn_signature.parameters.get("data")
    except AttributeError:
        return False
    expects = False
    if data is not None:
        media_type = getattr(data.kwarg_definition, "media_type", RequestEncodingType.JSON)
        expects = media_type == RequestEncodingType.JSON
    try:
        route_handler._agentapi_expects_json = expects
    except AttributeError:  # slotted handler: just recompute next time (cheap)
        pass
    return expects


def check_json_content_type(scope: Scope) -> None:
    """415 problem+json for a non-JSON body sent to a handler that takes a JSON ``data`` body (a step
    of api.after_auth)."""
    if scope.get("method") in _BODY_METHODS and _expects_json_body(scope.get("route_handler")):
        content_type = _header(scope, b"content-type")
        if content_type is not None:
            media = content_type.split(";", 1)[0].strip().lower()
            if media and not _JSON_MEDIA.match(media):
                raise UnsupportedMediaTypeException(
                    detail=f"Content-Type must be application/json, not {media[:100]}"
                )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _utf8(text: str) -> str | None:
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return None


def check_query_text(query_string: bytes) -> None:
    """422 naming the query parameter whose value is not UTF-8 or holds what PostgreSQL cannot store
    (a NUL in ``/audit?action=`` reached the database and came back as a 500)."""
    # latin-1 keeps every byte, so UTF-8 is checked per parameter and the culprit named.
    raw = query_string.decode("latin-1")
    for name, value in parse_qsl(raw, keep_blank_values=True, encoding="latin-1"):
        text_name, text_value = _utf8(name), _utf8(value)
        if text_name is None or text_value is None or UNSTORABLE.search(text_name + text_value):
            shown = (text_name or name).encode("ascii", "replace").decode()[:64]
            raise ValidationException(
                f"query parameter {shown} is not UTF-8 text or {UNSTORABLE_REASON}",
                extra=[{"key": shown, "message": "unstorable text"}],
            )


class RequestHeaderFieldsTooLargeException(ClientException):
    """431: the request's headers together exceed ``AGENTAPI_MAX_HEADER_BYTES``."""

    status_code = 431


def check_header_size(size: int, limit: int) -> None:
    """431 for requests whose header names and values together exceed the configured bytes: the
    server took a 1 MB header, and everything after this check reads headers."""
    if size > limit:
        raise RequestHeaderFieldsTooLargeException(
            f"the request headers are {size} bytes; at most {limit} are accepted"
        )
