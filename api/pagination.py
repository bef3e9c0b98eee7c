"""Opaque cursors for keyset pagination: the sort key of the last row of a page, base64-encoded."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from litestar.exceptions import ValidationException

SEPARATOR = "|"
T = TypeVar("T")


def encode_cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(SEPARATOR.join(str(p) for p in parts).encode()).decode()


def decode_cursor(cursor: str, parts: int) -> list[str]:
    """The cursor's parts; a 400 problem when it is not one this API returned."""
    try:
        values = base64.urlsafe_b64decode(cursor.encode()).decode().split(SEPARATOR)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationException("cursor is not one this API returned") from exc
    if len(values) != parts:
        raise ValidationException("cursor is not one this API returned")
    return values


def cursor_value(cursor: str, kind: Callable[[str], T]) -> T:
    """A one-part cursor parsed as ``kind`` (UUID, int, ...)."""
    (value,) = decode_cursor(cursor, 1)
    try:
        return kind(value)
    except ValueError as exc:
        raise ValidationException("cursor is not one this API returned") from exc
