"""StrictBody takes each field's value only in the JSON type its schema documents (pydantic's lax
mode took 0 for false and "5" for 5), however many bodies a model has validated before."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import pytest
from pydantic import Field, ValidationError

from api.problems import StrictBody


class Body(StrictBody):
    name: str
    count: int = 0
    ratio: float = 1.0
    flag: bool = False
    tags: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    either: str | int | None = None
    limited: Annotated[str, Field(max_length=5)] = "x"
    kind: Literal["a", "b"] = "a"
    ident: UUID | None = None


@pytest.mark.parametrize(
    ("field", "value", "wanted"),
    [
        ("name", 5, "string"),
        ("count", "5", "integer"),
        ("count", True, "integer"),
        ("ratio", "1.5", "number"),
        ("flag", 0, "boolean"),
        ("tags", "a", "array"),
        ("extra", [["k", "v"]], "object"),
        ("either", 1.5, "string or integer"),
        ("limited", 1, "string"),
    ],
)
def test_a_value_of_another_json_type_is_refused(field: str, value: Any, wanted: str) -> None:
    for _ in range(3):
        with pytest.raises(ValidationError) as refused:
            Body.model_validate({"name": "n", field: value})
        (error,) = refused.value.errors()
        assert error["loc"] == (field,) and f"must be a JSON {wanted}" in error["msg"]


def test_values_of_the_documented_types_pass() -> None:
    for _ in range(3):
        body = Body.model_validate(
            {
                "name": "n",
                "count": 2,
                "ratio": 2,
                "flag": True,
                "tags": ["t"],
                "extra": {"k": [1]},
                "either": 3,
                "limited": "abc",
                "kind": "b",
                "ident": "00000000-0000-0000-0000-000000000001",
            }
        )
        assert (body.ratio, body.either, body.ident) == (2.0, 3, UUID(int=1))
        assert Body.model_validate({"name": "n", "either": "s", "ident": None}).either == "s"
