"""RFC 9457 problem details (``application/problem+json``) for every error the ingress answers.

Wire it with ``Litestar(exception_handlers=exception_handlers, request_max_body_size=...)``.

How Litestar 2.25 reports bad bodies (checked against its source and by test):
- Unparseable JSON: msgspec raises ``SerializationException`` while the handler's kwargs are extracted, and
  ``HTTPRoute`` re-raises it as a plain ``ClientException`` (400) *from* it. We answer 400
  "malformed JSON body".
- An empty body where ``data`` is required: ``ValidationException`` whose only error is key ``data`` with
  message ``'data'``. Also 400 (there is no JSON document to validate).
- Schema violations: ``ValidationException`` with ``extra`` = ``[{"key", "message", "source"?}]`` from the
  signature model (pydantic errors keep their ``loc`` as the dotted key; msgspec struct errors point at
  ``data`` with the field named in the message), or pydantic's ``errors()`` list from a PydanticDTO. We answer
  422 with ``errors: [{field, message, source?}]``; the rejected input values are never echoed.
- A parameter error without field details (``Missing required query parameter ...``): 400 with its detail.
- Too large a body: ``RequestEntityTooLarge`` (413) from ``request_max_body_size``, checked against the
  ``Content-Length`` before reading and against the counted bytes of a chunked body while reading.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from http import HTTPStatus
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    SerializationException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from services.errors import DomainError, Invalid, TooMany, Unavailable
from services.observability import correlation_id
from services.outages import default_outage_exceptions

logger = logging.getLogger("agentapi.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:agentapi:problem:"
_RESERVED = frozenset({"type", "title", "status", "detail", "instance"})


def problem_type(slug: str) -> str:
    return PROBLEM_TYPE_PREFIX + slug


class FieldError(BaseModel):
    field: str
    message: str
    source: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem details object; extension members (``errors``, ``correlation_id``, ...) allowed."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
    correlation_id: str | None = None


# A NUL (PostgreSQL text refuses it) or an unpaired UTF-16 surrogate (no UTF-8 encoding).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_REASON = "contains a NUL character or an unpaired surrogate, which cannot be stored"


def unstorable_text(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The path (``""``, ``.key``, ``[2]``) of the first string, or dict key, in ``value`` that
    cannot be stored as text, or None."""
    if isinstance(value, str):
        return path if UNSTORABLE.search(value) else None
    if depth > 64:
        return None
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and UNSTORABLE.search(key):
                return f"{path}.<key>"
            found = unstorable_text(item, f"{path}.{key}", depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = unstorable_text(item, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
    return None


_JSON_TYPES: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    bool: ("boolean", lambda v: isinstance(v, bool)),
    int: ("integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    str: ("string", lambda v: isinstance(v, str)),
    dict: ("object", lambda v: isinstance(v, dict)),
    list: ("array", lambda v: isinstance(v, list)),
}


# A field's documented JSON types as (name, test) pairs; None where this does not judge the field.
JsonChecks = tuple[tuple[str, Callable[[Any], bool]], ...] | None


def _json_checks(annotation: Any) -> JsonChecks:
    """The JSON type(s) ``annotation`` documents; None for types this does not judge (UUIDs,
    dates, literals and models are pydantic's to check)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _json_checks(get_args(annotation)[0])
    members = (
        [m for m in get_args(annotation) if m is not type(None)]
        if origin in (Union, UnionType)
        else [annotation]
    )
    checks = []
    for member in members:
        known = _JSON_TYPES.get(get_origin(member) or member)
        if known is None:
            return None
        checks.append(known)
    return tuple(checks)


@cache
def _field_checks(model: type[BaseModel], name: str) -> JsonChecks:
    # Once per body field, not per value: reading the annotation was most of a body's validation.
    field = model.model_fields.get(name)
    return _json_checks(field.annotation) if field else None


def _json_type_mismatch(checks: JsonChecks, value: Any) -> str | None:
    """The JSON type(s) ``checks`` document when ``value`` has none of them, else None."""
    if not checks or any(test(value) for _, test in checks):
        return None
    return " or ".join(name for name, _ in checks)


class StrictBody(BaseModel):
    """Base for request bodies: unknown fields are a 422, not silently dropped.

    Pydantic rather than a msgspec Struct(forbid_unknown_fields=True): through Litestar's pydantic plugin
    every error arrives with its own field path (``colour``, ``items.0.name``) and pydantic reports all
    errors at once, whereas msgspec stops at the first error and reports unknown/missing fields against the
    whole body (``key: data``). Pydantic also brings field validators and richer constraints, and the same
    models document the OpenAPI schema.
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _json_type(cls, value: Any, info: ValidationInfo) -> Any:
        # Pydantic's lax mode took 0 for false, "5" for 5 and a list of pairs for an object; the
        # documented schema says otherwise, so the JSON type must be the field's own.
        wanted = (
            None if value is None else _json_type_mismatch(_field_checks(cls, info.field_name or ""), value)
        )
        if wanted:
            raise ValueError(f"must be a JSON {wanted}")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any, info: ValidationInfo) -> Any:
        # PostgreSQL text cannot hold NUL and UTF-8 cannot carry a lone surrogate; found here, each
        # is a 422 naming the field instead of a 500 from the driver.
        where = unstorable_text(value)
        if where is not None:
            raise ValueError(f"{info.field_name}{where} {UNSTORABLE_REASON}")
        return value


class UnsupportedMediaTypeException(ClientException):
    """415: the body's Content-Type is not one the endpoint accepts."""

    status_code = 415


# ----------------------------------------------------------------------------------------------------------
# Building problem responses


def _correlation_id() -> str | None:
    return correlation_id.get()


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str | None = None,
    instance: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type_ or "about:blank",
        "title": title or _phrase(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    for key, value in extensions.items():
        if key not in _RESERVED and value is not None:
            body[key] = value
    if "correlation_id" not in body and (cid := _correlation_id()):
        body["correlation_id"] = cid
    return body


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str | None = None,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
    **extensions: Any,
) -> Response[dict[str, Any]]:
    """A problem+json response; ``extensions`` become top-level members (``errors=[...]`` etc.)."""
    return Response(
        problem_body(status, detail, title=title, type_=type_, instance=instance, **extensions),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of error answers: ``@post(..., responses=problem_responses(400, 404, 422))``."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_phrase(status),
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in statuses
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# ----------------------------------------------------------------------------------------------------------
# Exception handlers

_DEFAULT_DETAIL = {
    400: "bad request",
    401: "authentication required",
    403: "not allowed",
    404: "resource not found",
    409: "conflict",
    415: "unsupported media type",
    429: "too many requests",
    503: "service temporarily unavailable",
}
_TYPE_SLUG = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    410: "gone",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    503: "service-unavailable",
}
_MSGSPEC_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def _type_for(status: int) -> str:
    slug = _TYPE_SLUG.get(status)
    return problem_type(slug) if slug else "about:blank"


def _has_header(headers: Mapping[str, Any], name: str) -> bool:
    return any(key.lower() == name.lower() for key in headers)


def _malformed_body(request: Request[Any, Any, Any], reason: str | None) -> Response[dict[str, Any]]:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    kind = "JSON" if content_type.endswith("json") or not content_type else content_type
    return problem_response(
        400,
        f"malformed {kind} body",
        type_=problem_type("malformed-body"),
        instance=request.url.path,
        reason=reason,
    )


def _too_deep_handler(request: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    # msgspec's JSON decoder recurses once per level and gives up with RecursionError (a 500 for a
    # body nested 5,000 deep); nothing else in a request path recurses without bound.
    return _malformed_body(request, "nested too deeply")


def _is_missing_body(error: Mapping[str, Any]) -> bool:
    return error.get("key") == "data" and error.get("message") == "'data'"


def _field_errors(request: Request[Any, Any, Any], extra: Any) -> list[dict[str, str]]:
    """Litestar's signature-model errors and pydantic's ``errors()`` as ``{field, message, source}``."""
    if isinstance(extra, Mapping):
        extra = [extra]
    if not isinstance(extra, list):
        return []
    try:
        has_body = "data" in request.route_handler.parsed_fn_signature.parameters
    except (AttributeError, KeyError):
        has_body = False
    params = set(request.query_params) | set(request.path_params)
    errors: list[dict[str, str]] = []
    for item in extra:
        if not isinstance(item, Mapping):
            continue
        if "loc" in item:  # pydantic errors() (PydanticDTO)
            field = ".".join(str(part) for part in item.get("loc") or ()) or "$"
            message = str(item.get("msg", "invalid value"))
            source: str | None = "body"
        else:
            field = str(item.get("key") or "$")
            message = str(item.get("message", "invalid value"))
            raw_source = item.get("source")
            source = str(getattr(raw_source, "value", raw_source)) if raw_source else None  # ParamType enum
            if field == "data" and source == "body":
                match = _MSGSPEC_FIELD.search(message)  # msgspec names the field in the message
                field = match.group(1) if match else "$"
            if source is None and has_body and field.split(".")[0] not in params:
                source = "body"
        entry = {"field": field, "message": message.removeprefix("Value error, ")}
        if source:
            entry["source"] = str(source)
        errors.append(entry)
    return errors


def _validation_handler(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    if isinstance(exc.__cause__, SerializationException):
        return _malformed_body(request, str(exc.__cause__))
    extra = exc.extra
    if (
        isinstance(extra, list)
        and extra
        and all(isinstance(e, Mapping) and _is_missing_body(e) for e in extra)
    ):
        return _malformed_body(request, "the request body is empty")
    errors = _field_errors(request, extra)
    if not errors:
        detail = exc.detail if exc.detail and exc.detail != _phrase(400) else _DEFAULT_DETAIL[400]
        return problem_response(400, detail, type_=_type_for(400), instance=request.url.path)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    if len(errors) > 5:
        summary += f"; and {len(errors) - 5} more"
    return problem_response(
        422,
        f"validation failed: {summary}",
        type_=_type_for(422),
        instance=request.url.path,
        errors=errors,
    )


def _http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if status >= 500 and status != 503:
        return _internal_error_handler(request, exc)
    if status == 400 and isinstance(exc.__cause__, SerializationException):
        return _malformed_body(request, str(exc.__cause__))
    headers: dict[str, str] = {str(k): str(v) for k, v in (exc.headers or {}).items()}
    specific = bool(exc.detail) and exc.detail != _phrase(status)
    detail = exc.detail if specific else _DEFAULT_DETAIL.get(status)
    extensions: dict[str, Any] = {}

    if status == 401 and not _has_header(headers, "WWW-Authenticate"):
        from api.auth import www_authenticate

        headers["WWW-Authenticate"] = www_authenticate()
    elif status == 405:
        detail = f"method {request.method} is not allowed on this resource"
    elif status == 413 and not specific:
        limit = _body_limit(request)
        detail = f"request body exceeds the limit of {limit} bytes" if limit else "request body too large"
        extensions["limit_bytes"] = limit
    elif status == 429 and not _has_header(headers, "Retry-After"):
        headers["Retry-After"] = str(getattr(exc, "retry_after", None) or _reset_seconds(headers) or 1)
    elif status == 503 and not _has_header(headers, "Retry-After"):
        headers["Retry-After"] = str(getattr(exc, "retry_after", None) or 5)

    if isinstance(exc.extra, Mapping):
        extensions.update({str(k): v for k, v in exc.extra.items() if str(k) not in _RESERVED})
    return problem_response(
        status,
        detail,
        type_=_type_for(status),
        headers=headers,
        instance=request.url.path,
        **extensions,
    )


def _domain_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    """A service's refusal, answered exactly as the HTTP exception of its status would be."""
    if isinstance(exc, Invalid):
        # Field errors take the same path as the request body's own (source, summary, 400 vs 422).
        fields = [{"key": field, "message": message} for field, message in exc.errors]
        return _validation_handler(request, ValidationException(exc.detail, extra=fields or None))
    headers: dict[str, str] = {}
    if isinstance(exc, TooMany | Unavailable) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    http = HTTPException(exc.detail, status_code=exc.status, headers=headers, extra=exc.extensions or None)
    return _http_exception_handler(request, http)


def _body_limit(request: Request[Any, Any, Any]) -> int | None:
    try:
        return request.route_handler.resolve_request_max_body_size()
    except Exception:
        return None


def _reset_seconds(headers: Mapping[str, str]) -> int | None:
    for key, value in headers.items():
        if key.lower() == "ratelimit-reset" and value.isdigit():
            return max(int(value), 1)
    return None


def _report_to_sentry(exc: BaseException) -> None:
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover
        return
    try:
        if sentry_sdk.is_initialized():
            sentry_sdk.capture_exception(exc)  # queued to the SDK's background worker; does not block
    except Exception:  # pragma: no cover - never let error reporting turn into a second error
        logger.debug("sentry capture failed", exc_info=True)


def _internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    _report_to_sentry(exc)
    return problem_response(
        500,
        "internal server error; the incident has been logged",
        type_=problem_type("internal-error"),
        instance=request.url.path,
    )


# How long a client should wait before retrying after an outage (503 Retry-After, SSE retry).
OUTAGE_RETRY_AFTER_SECONDS = 5


def _outage_handler_for(
    retry_after: int,
) -> Callable[[Request[Any, Any, Any], Exception], Response[dict[str, Any]]]:
    def _outage_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
        logger.error(
            "backing service unavailable on %s %s: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
        )
        return problem_response(
            503,
            "a backing service is temporarily unavailable; retry later",
            type_=_type_for(503),
            headers={"Retry-After": str(retry_after)},
            instance=request.url.path,
        )

    return _outage_handler


ExceptionHandlerMap = dict[type[Exception] | int, Callable[[Request[Any, Any, Any], Any], Response[Any]]]


def make_exception_handlers(
    outage_exceptions: Iterable[type[BaseException]] | None = None,
    *,
    outage_retry_after_seconds: int = OUTAGE_RETRY_AFTER_SECONDS,
) -> ExceptionHandlerMap:
    """The app's ``exception_handlers``: every error becomes problem+json.

    ``outage_exceptions`` (default :func:`default_outage_exceptions`) map to 503 with ``Retry-After``.
    Handlers are keyed by exception type only, so Litestar's most-specific-class lookup applies.
    """
    outages = tuple(default_outage_exceptions() if outage_exceptions is None else outage_exceptions)
    handlers: ExceptionHandlerMap = {
        ValidationException: _validation_handler,
        HTTPException: _http_exception_handler,
        DomainError: _domain_handler,
        RecursionError: _too_deep_handler,
        Exception: _internal_error_handler,
    }
    outage_handler = _outage_handler_for(outage_retry_after_seconds)
    for exc_type in outages:
        handlers[exc_type] = outage_handler  # type: ignore[index]  # Litestar's map is keyed by int | type[Exception]; these are exception types
    return handlers


exception_handlers: ExceptionHandlerMap = make_exception_handlers()
