"""Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives as its awaitable finishes
(CPython gh-86296, fixed in 3.12 by building ``wait_for`` on ``asyncio.timeout``).

redis-py sends every command through ``asyncio.wait_for`` when the connection has a socket timeout
(5 s by default in redis-py 8), so a task cancelled while its command was being written carried on
as if nothing had happened. A session host's loops are cancelled together when the worker hands
its sessions over; the loops that swallowed the cancellation ran on, their task group never
finished, and about half the hosts of a stopping worker never handed over (the sessions moved only
once the dead worker's heartbeat lapsed, 10-22 s later). In a 300-try loop against a real Redis, 59
cancellations of a pipeline's ``execute`` were lost on 3.11.7.

``install`` puts 3.12's implementation in its place; on 3.12 and later it does nothing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

# The interpreter's own, kept before ``install`` replaces it.
STDLIB_WAIT_FOR = asyncio.wait_for


async def wait_for(fut: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` on ``asyncio.timeout``, as in Python 3.12: a cancellation always
    propagates (a timeout of 0 or less times out whatever has not finished at once)."""
    async with asyncio.timeout(timeout):
        return await fut


def install() -> None:
    """Call once per process, before the event loop runs any Redis client."""
    if sys.version_info < (3, 12):
        # Replacing the library function on purpose; the signatures agree but typeshed's overloads differ.
        asyncio.wait_for = wait_for  # type: ignore[assignment]  # see above
        asyncio.tasks.wait_for = wait_for  # type: ignore[assignment]  # see above
