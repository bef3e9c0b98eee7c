"""Finding 5: a member's prompt template of nested loops took 3.7 s on the ingress's event loop, and
a 50 MB string repeat was accepted. Templates now render in a thread within a budget (time, loop
steps, output size, no oversized widths), refused at save with a 422 naming ``content``."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.fixtures.stack import Stack
from tests.security.helpers import assert_problem

HOSTILE = [
    "{% for i in range(100000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
    '{{ "x" * 50000000 }}',
    '{{ "ab"|center(100000000) }}',
    '{{ "%100000000s"|format("x") }}',
    '{{ "{:>100000000}".format(1) }}',
    "{{ 2 ** 10000000 }}",
]


@pytest.mark.parametrize("template", HOSTILE)
async def test_hostile_templates_are_refused_at_save(stack: Stack, template: str) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        answer = await client.post(
            "/api/v1/prompts",
            json={"name": f"t-{uuid.uuid4().hex[:8]}", "content": template, "is_template": True},
            headers=stack.headers(),
        )
        problem = assert_problem(answer, 422)
        assert [e["field"] for e in problem["errors"]] == ["content"]  # type: ignore[attr-defined]


async def test_ordinary_templates_still_render(stack: Stack) -> None:
    template = "Org {{ org_name }} on {{ date }}:{% for i in range(3) %} {{ i }}{% endfor %} {{ '-' * 20 }}"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        created = await client.post(
            "/api/v1/prompts",
            json={"name": "fine", "content": template, "is_template": True},
            headers=stack.headers(),
        )
        assert created.status_code == 201, created.text
        preview = await client.get("/api/v1/prompts/preview", headers=stack.headers())
        assert " 0 1 2 " + "-" * 20 in preview.json()["prompt"]
