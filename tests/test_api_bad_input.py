"""Bad requests to the running ingress get precise 4xx problem+json answers, never a 500."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest

from tests.fixtures.stack import Stack


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def assert_problem(response: httpx.Response, status: int, detail_has: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["type"]
    assert detail_has.lower() in json.dumps(body).lower(), body


@pytest.fixture
def client(stack: Stack):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        yield http


def test_malformed_json(client: httpx.Client, stack: Stack) -> None:
    response = client.post(
        "/api/v1/sessions",
        content=b'{"agent_type": "custom",',
        headers={**stack.headers(), "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "malformed")


def test_unknown_field(client: httpx.Client, stack: Stack) -> None:
    response = client.post(
        "/api/v1/sessions", json={"agent_type": "custom", "colour": "blue"}, headers=stack.headers()
    )
    assert_problem(response, 422, "colour")


def test_wrong_type(client: httpx.Client, stack: Stack) -> None:
    response = client.post("/api/v1/sessions", json={"agent_type": 42}, headers=stack.headers())
    assert_problem(response, 422, "agent_type")


def test_oversized_body(client: httpx.Client, stack: Stack) -> None:
    big = json.dumps({"agent_type": "custom", "prompt": "x" * (1024 * 1024 + 10)})
    response = client.post(
        "/api/v1/sessions", content=big, headers={**stack.headers(), "Content-Type": "application/json"}
    )
    assert_problem(response, 413, "")


def test_no_token(client: httpx.Client) -> None:
    response = client.post("/api/v1/sessions", json={"agent_type": "custom"})
    assert_problem(response, 401, "bearer")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_expired_token(client: httpx.Client, stack: Stack) -> None:
    token = stack.token(ttl_seconds=-3600)
    response = client.post(
        "/api/v1/sessions", json={"agent_type": "custom"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 401, "expired")


def test_wrong_audience(client: httpx.Client, stack: Stack) -> None:
    token = stack.token(audience="someone-else")
    response = client.post(
        "/api/v1/sessions", json={"agent_type": "custom"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 401, "audience")


def test_alg_none(client: httpx.Client, stack: Stack) -> None:
    token = _unsigned(
        {
            "sub": str(stack.user_id),
            "aud": "authenticated",
            "exp": int(time.time()) + 600,
            "app_metadata": {"org_id": str(stack.org_id), "role": "owner"},
        }
    )
    response = client.post(
        "/api/v1/sessions", json={"agent_type": "custom"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 401, "algorithm")


def test_wrong_secret(client: httpx.Client, stack: Stack) -> None:
    token = jwt.encode(
        {"sub": str(stack.user_id), "aud": "authenticated", "exp": int(time.time()) + 600},
        "another-secret-entirely-32-bytes-long!!",
        algorithm="HS256",
    )
    response = client.post(
        "/api/v1/sessions", json={"agent_type": "custom"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 401, "signature")


def test_unknown_route_and_method(client: httpx.Client, stack: Stack) -> None:
    assert_problem(client.get("/api/v1/nothing-here", headers=stack.headers()), 404, "")
    assert_problem(client.put("/api/v1/sessions", json={}, headers=stack.headers()), 405, "")


def test_health_and_ready_need_no_token(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["checks"] == {"database": "ok", "redis": "ok", "sandbox": "ok"}
