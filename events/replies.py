"""Typed views of Redis replies.

redis-py types every reply for any client configuration (bytes or str, RESP2 lists or RESP3 maps).
All of this project's clients are made with ``decode_responses=True`` with redis-py's default
protocol (RESP3 from redis-py 8), whose XREAD/XREADGROUP answers redis-py still shapes as a list of
``[stream, entries]``, so a reply holds ``str`` only: these functions state that once, for the type
checker, instead of a cast at every call site.
"""

from typing import cast

from redis.typing import StreamRangeResponse, XReadGroupResponse, XReadResponse

Entry = tuple[str, dict[str, str]]


def optional_text(reply: bytes | str | None) -> str | None:
    return cast(str | None, reply)


def fields(reply: dict[bytes | str, bytes | str]) -> dict[str, str]:
    """An HGETALL reply."""
    return cast(dict[str, str], reply)


def members(reply: object) -> list[str]:
    """A set or list reply (SMEMBERS, LRANGE, ZRANGE without scores)."""
    return cast(list[str], reply)


def entries(reply: StreamRangeResponse | None) -> list[Entry]:
    """An XRANGE/XREVRANGE/XAUTOCLAIM reply's entries."""
    return cast(list[Entry], reply or [])


def streams(reply: XReadResponse | XReadGroupResponse | None) -> list[tuple[str, list[Entry]]]:
    """An XREAD/XREADGROUP reply: each stream with its entries, none when the read timed out."""
    return cast(list[tuple[str, list[Entry]]], reply or [])
