"""Every error is RFC 9457 problem+json: bad bodies (400/413/415/422), routing (404/405), auth-ish (401/403),
rate limits (429), outages (503) and crashes (500, with nothing internal in the body)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest
import redis.exceptions
import uvicorn
from litestar import Litestar, get, post
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.testing import AsyncTestClient
from pydantic import Field

from api.after_auth import after_auth_middleware
from api.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    StrictBody,
    exception_handlers,
    make_exception_handlers,
    problem_response,
    problem_responses,
)
from services.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    TooLarge,
    TooMany,
    Unavailable,
)

pytestmark = pytest.mark.timeout(60)

LIMIT = 1_048_576
SECRET_TEXT = "postgresql://agentapi:hunter2@db.internal:5432/prod"


class Inner(StrictBody):
    value: int


class Item(StrictBody):
    name: str = Field(min_length=1)
    count: int = 0
    inner: Inner | None = None
    note: str | None = None


class MsgspecItem(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    count: int = 0


class CustomOutage(Exception):
    pass


@post("/items")
async def create_item(data: JSONBody[Item]) -> dict[str, Any]:
    return {"name": data.name, "count": data.count, "note_len": len(data.note or "")}


@post("/msgspec-items")
async def create_msgspec_item(data: JSONBody[MsgspecItem]) -> dict[str, Any]:
    return {"name": data.name}


@get("/items/{item_id:int}")
async def read_item(item_id: FromPath[int]) -> dict[str, Any]:
    raise NotFoundException("item not found")


@get("/search")
async def search(limit: FromQuery[int] = 10) -> dict[str, Any]:
    return {"limit": limit}


@get("/boom")
async def boom() -> None:
    raise RuntimeError(f"could not connect to {SECRET_TEXT}")


@get("/forbidden")
async def forbidden() -> None:
    raise PermissionDeniedException("admins only")


@get("/unauthorized")
async def unauthorized() -> None:
    raise NotAuthorizedException()


@get("/limited")
async def limited() -> None:
    raise TooManyRequestsException("slow down")


@get("/redis-down")
async def redis_down() -> None:
    raise redis.exceptions.ConnectionError(f"Error 111 connecting to {SECRET_TEXT}")


@get("/custom-outage")
async def custom_outage() -> None:
    raise CustomOutage("queue offline")


@get("/bad-param")
async def bad_param() -> None:
    raise ValidationException("Last-Event-ID must be an event-log id")


@get("/custom-problem")
async def custom_problem() -> Any:
    return problem_response(
        409, "session already running", type_="urn:agentapi:problem:conflict", session="s1"
    )


@post("/documented", responses=problem_responses(400, 422))
async def documented(data: JSONBody[Item]) -> dict[str, str]:
    return {}


HANDLERS = [
    create_item,
    create_msgspec_item,
    read_item,
    search,
    boom,
    forbidden,
    unauthorized,
    limited,
    redis_down,
    custom_outage,
    bad_param,
    custom_problem,
    documented,
]


def build_app(**kwargs: Any) -> Litestar:
    handlers = kwargs.pop("exception_handlers", exception_handlers)
    return Litestar(
        HANDLERS,
        exception_handlers=handlers,
        request_max_body_size=LIMIT,
        middleware=[after_auth_middleware],
        **kwargs,
    )


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(build_app()) as test_client:
        yield test_client


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    Problem.model_validate(body)
    return body


def post_json(client: AsyncTestClient[Litestar], path: str, content: bytes | str) -> Any:
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------------------------------------------------
# Bodies


async def test_valid_body(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/items", json={"name": "a", "count": 2})
    assert response.status_code == 201
    assert response.json() == {"name": "a", "count": 2, "note_len": 0}


@pytest.mark.parametrize("content", [b'{"name": "a",', b"{name: 'a'}", b"nope", b'{"name": "a"} trailing'])
async def test_malformed_json_is_400(client: AsyncTestClient[Litestar], content: bytes) -> None:
    body = assert_problem(await post_json(client, "/items", content), 400)
    assert body["detail"] == "malformed JSON body"
    assert body["type"] == "urn:agentapi:problem:malformed-body"
    assert body["instance"] == "/items"


async def test_empty_body_is_400(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await post_json(client, "/items", b""), 400)
    assert body["detail"] == "malformed JSON body"
    assert body["reason"] == "the request body is empty"


async def test_unknown_field_is_422_naming_it(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.post("/items", json={"name": "a", "colour": "blue"}), 422)
    assert body["errors"] == [
        {"field": "colour", "message": "Extra inputs are not permitted", "source": "body"}
    ]
    assert "colour" in body["detail"]
    assert body["type"] == "urn:agentapi:problem:validation-error"


async def test_wrong_type_is_422_naming_the_field(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.post("/items", json={"name": 42, "count": "many"}), 422)
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert set(fields) == {"name", "count"}
    assert "string" in fields["name"]
    assert "integer" in fields["count"]
    assert "many" not in json.dumps(body)  # rejected values are not echoed


async def test_missing_field_is_422(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.post("/items", json={"count": 1}), 422)
    assert body["errors"] == [{"field": "name", "message": "Field required", "source": "body"}]


async def test_nested_field_path(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(
        await client.post("/items", json={"name": "a", "inner": {"value": "x", "extra": 1}}), 422
    )
    assert {e["field"] for e in body["errors"]} == {"inner.value", "inner.extra"}


async def test_not_an_object_is_422(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.post("/items", json=[1, 2]), 422)
    assert body["errors"][0]["field"] == "$"


async def test_msgspec_bodies_name_the_field_too(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.post("/msgspec-items", json={"name": "a", "colour": 1}), 422)
    assert body["errors"] == [
        {"field": "colour", "message": "Object contains unknown field `colour`", "source": "body"}
    ]
    body = assert_problem(await client.post("/msgspec-items", json={"name": 1}), 422)
    assert body["errors"][0]["field"] == "name"
    body = assert_problem(await client.post("/msgspec-items", json={}), 422)
    assert body["errors"][0]["field"] == "name"


async def test_query_parameter_type_is_422(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.get("/search", params={"limit": "lots"}), 422)
    assert body["errors"][0]["field"] == "limit"
    assert body["errors"][0]["source"] == "query"


async def test_plain_validation_exception_is_400(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.get("/bad-param"), 400)
    assert body["detail"] == "Last-Event-ID must be an event-log id"


async def test_oversized_body_is_413(client: AsyncTestClient[Litestar]) -> None:
    big = json.dumps({"name": "a", "note": "x" * (LIMIT + 10)})
    body = assert_problem(await post_json(client, "/items", big), 413)
    assert body["detail"] == f"request body exceeds the limit of {LIMIT} bytes"
    assert body["limit_bytes"] == LIMIT


async def test_body_just_under_the_limit_is_accepted(client: AsyncTestClient[Litestar]) -> None:
    note = "x" * (LIMIT - 100)
    response = await client.post("/items", json={"name": "a", "note": note})
    assert response.status_code == 201, response.text[:300]
    assert response.json()["note_len"] == len(note)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_non_json_body_is_415(client: AsyncTestClient[Litestar], content_type: str) -> None:
    response = await client.post("/items", content=b'{"name": "a"}', headers={"Content-Type": content_type})
    body = assert_problem(response, 415)
    assert content_type in body["detail"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json"])
async def test_json_media_types_are_accepted(client: AsyncTestClient[Litestar], content_type: str) -> None:
    response = await client.post("/items", content=b'{"name": "a"}', headers={"Content-Type": content_type})
    assert response.status_code == 201, response.text


# ------------------------------------------------------------------------------------------------------------
# Routing, access, limits, outages, crashes


async def test_unknown_route_is_404(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.get("/nothing-here"), 404)
    assert body["detail"] == "resource not found"


async def test_not_found_keeps_the_handler_detail(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.get("/items/7"), 404)
    assert body == {
        "type": "urn:agentapi:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "item not found",
        "instance": "/items/7",
    }


async def test_wrong_method_is_405_with_allow(client: AsyncTestClient[Litestar]) -> None:
    response = await client.delete("/items")
    body = assert_problem(response, 405)
    assert "POST" in response.headers["allow"]
    assert body["detail"] == "method DELETE is not allowed on this resource"


async def test_401_has_a_bearer_challenge(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/unauthorized")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_403(client: AsyncTestClient[Litestar]) -> None:
    assert assert_problem(await client.get("/forbidden"), 403)["detail"] == "admins only"


async def test_429_has_retry_after(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/limited")
    assert assert_problem(response, 429)["detail"] == "slow down"
    assert int(response.headers["retry-after"]) >= 1


async def test_redis_outage_is_503_with_retry_after(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/redis-down")
    body = assert_problem(response, 503)
    assert response.headers["retry-after"] == "5"
    assert "hunter2" not in response.text and "db.internal" not in response.text
    assert body["detail"] == "a backing service is temporarily unavailable; retry later"


async def test_outage_types_are_configurable() -> None:
    handlers = make_exception_handlers((CustomOutage,), outage_retry_after_seconds=30)
    async with AsyncTestClient(build_app(exception_handlers=handlers)) as test_client:
        response = await test_client.get("/custom-outage")
        assert_problem(response, 503)
        assert response.headers["retry-after"] == "30"
        # Not in the tuple any more: a redis error is now an unexpected crash.
        assert_problem(await test_client.get("/redis-down"), 500)


async def test_unexpected_exception_is_500_without_internals(
    client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="agentapi.errors"):
        response = await client.get("/boom")
    body = assert_problem(response, 500)
    assert body["detail"] == "internal server error; the incident has been logged"
    for leak in ("Traceback", "RuntimeError", "hunter2", "db.internal", "test_problems", 'File "'):
        assert leak not in response.text
    record = next(r for r in caplog.records if r.name == "agentapi.errors")
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


async def test_500_even_in_debug_mode() -> None:
    async with AsyncTestClient(build_app(debug=True)) as test_client:
        response = await test_client.get("/boom")
    assert_problem(response, 500)
    assert "Traceback" not in response.text and "hunter2" not in response.text


async def test_problem_response_extensions(client: AsyncTestClient[Litestar]) -> None:
    body = assert_problem(await client.get("/custom-problem"), 409)
    assert body["session"] == "s1"
    assert body["type"] == "urn:agentapi:problem:conflict"


async def test_problem_schema_in_openapi(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    responses = schema["paths"]["/documented"]["post"]["responses"]
    assert PROBLEM_MEDIA_TYPE in responses["422"]["content"]


# ------------------------------------------------------------------------------------------------------------
# The same over real HTTP (uvicorn), where Content-Length and chunked uploads come off the wire


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-problems", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_over_http_bad_bodies(live_url: str) -> None:
    async with httpx.AsyncClient(base_url=live_url, timeout=10) as http:
        body = assert_problem(await post_json(http, "/items", b'{"name":'), 400)  # type: ignore[arg-type]
        assert body["detail"] == "malformed JSON body"
        body = assert_problem(await http.post("/items", json={"name": "a", "colour": 1}), 422)
        assert body["errors"][0]["field"] == "colour"

        big = b'{"name": "a", "note": "' + b"x" * (LIMIT + 1) + b'"}'
        assert_problem(await post_json(http, "/items", big), 413)  # type: ignore[arg-type]

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"name": "a", "note": "'
            for _ in range(40):
                yield b"x" * 32768
                await asyncio.sleep(0)
            yield b'"}'

        response = await http.post("/items", content=chunks(), headers={"Content-Type": "application/json"})
        assert_problem(response, 413)
        body = assert_problem(await http.get("/boom"), 500)
        assert "hunter2" not in json.dumps(body)


# ------------------------------------------------------------------------------------------------------------
# Domain errors: a service's refusal reads exactly as the HTTP exception a route raised before


DOMAIN_CASES: dict[str, tuple[DomainError, Exception]] = {
    "not-found": (NotFound("session not found"), NotFoundException("session not found")),
    "forbidden": (Forbidden("admins only"), PermissionDeniedException("admins only")),
    "conflict": (Conflict("busy"), ClientException("busy", status_code=409)),
    "gone": (
        Gone("the session has ended", session_status="ended", end_reason=None),
        ClientException(
            "the session has ended", status_code=410, extra={"session_status": "ended", "end_reason": None}
        ),
    ),
    "too-large": (
        TooLarge("files are limited to 10 bytes", limit_bytes=10),
        ClientException("files are limited to 10 bytes", status_code=413, extra={"limit_bytes": 10}),
    ),
    "invalid-field": (
        Invalid.field("custom_agent", "not allowlisted", "custom_agent is not on the allowlist"),
        ValidationException(
            "custom_agent is not on the allowlist",
            extra=[{"key": "custom_agent", "message": "not allowlisted"}],
        ),
    ),
    "invalid": (
        Invalid("cursor is not one this API returned"),
        ValidationException("cursor is not one this API returned"),
    ),
    "too-many": (
        TooMany("you already have 2 active sessions", retry_after=30),
        TooManyRequestsException("you already have 2 active sessions", headers={"Retry-After": "30"}),
    ),
    "unavailable": (Unavailable("vault sealed"), ClientException("vault sealed", status_code=503)),
}


@post("/raise/{case:str}/{style:str}")
async def raise_case(case: FromPath[str], style: FromPath[str], data: JSONBody[dict[str, Any]]) -> None:
    domain, http = DOMAIN_CASES[case]
    raise domain if style == "domain" else http


@pytest.mark.parametrize("case", sorted(DOMAIN_CASES))
async def test_domain_errors_answer_as_their_http_exceptions(case: str) -> None:
    app = Litestar([raise_case], exception_handlers=exception_handlers)
    async with AsyncTestClient(app) as client:
        domain = await client.post(f"/raise/{case}/domain", json={})
        http = await client.post(f"/raise/{case}/http", json={})
    assert domain.status_code == http.status_code
    assert domain.status_code == DOMAIN_CASES[case][0].status, domain.text
    assert domain.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert domain.headers.get("retry-after") == http.headers.get("retry-after")
    expected = http.json() | {"instance": f"/raise/{case}/domain"}
    assert domain.json() == expected
