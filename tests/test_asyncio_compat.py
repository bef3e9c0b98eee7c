"""The cancellation a task receives as its ``asyncio.wait_for`` finishes is not lost (see
services/asyncio_compat.py): the race is made exact, not left to timing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest

from services import asyncio_compat


async def cancelled_as_it_finishes(wait_for: Callable[[Awaitable[int], float], Awaitable[int]]) -> bool:
    """Whether a task cancelled in the same loop step as its wait_for's awaitable finished stops."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    went_on = asyncio.Event()

    async def waiter() -> None:
        await wait_for(done, 5)
        went_on.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    done.set_result(1)
    task.cancel()
    # Either the task ends cancelled, or it carries on past the wait_for.
    carried_on = asyncio.create_task(went_on.wait())
    await asyncio.wait([task, carried_on], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    carried_on.cancel()
    return not went_on.is_set()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the bug is in Python 3.11's wait_for")
async def test_python_311_wait_for_loses_that_cancellation() -> None:
    assert not await cancelled_as_it_finishes(asyncio_compat.STDLIB_WAIT_FOR)


async def test_the_installed_wait_for_keeps_it() -> None:
    asyncio_compat.install()
    assert await cancelled_as_it_finishes(asyncio.wait_for)
    assert await cancelled_as_it_finishes(asyncio_compat.wait_for)


async def test_the_installed_wait_for_still_times_out_and_returns() -> None:
    asyncio_compat.install()
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(never, 0.05)
    assert never.cancelled()

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await asyncio.wait_for(answer(), 5) == 42
    assert await asyncio.wait_for(answer(), None) == 42
