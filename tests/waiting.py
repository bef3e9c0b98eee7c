"""Waiting for something to happen in a test: a condition checked until it holds or a deadline
passes, never a fixed sleep that hopes it happened meanwhile."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.05


def _timed_out(timeout: float, what: str | None) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting until {what or 'the condition held'}")


def until_sync(condition: Callable[[], object], timeout: float = 30.0, what: str | None = None) -> None:
    """:func:`until` for a test without an event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what)
        time.sleep(POLL_SECONDS)


async def until(
    condition: Callable[[], object] | Callable[[], Awaitable[object]],
    timeout: float = 30.0,
    what: str | None = None,
) -> None:
    """Return once ``condition()`` (awaited when it is a coroutine) is truthy; AssertionError after
    ``timeout`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what)
        await asyncio.sleep(POLL_SECONDS)
