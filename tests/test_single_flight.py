"""Coalesced lookups: one run for concurrent callers, nothing kept afterwards."""

from __future__ import annotations

import asyncio

import pytest

from services.single_flight import SingleFlight


async def test_concurrent_callers_share_one_lookup_and_later_ones_run_again() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    runs = 0
    release = asyncio.Event()

    async def lookup() -> int:
        nonlocal runs
        runs += 1
        await release.wait()
        return runs

    callers = [asyncio.create_task(flights.run("k", lookup)) for _ in range(50)]
    other = asyncio.create_task(flights.run("other", lookup))
    await asyncio.sleep(0)
    release.set()
    shared = {await c for c in callers}
    assert runs == 2, "one run for the fifty callers of k, one for other"
    assert len(shared) == 1 and shared | {await other} == {1, 2}
    assert await flights.run("k", lookup) == 3, "a finished lookup is not kept"


async def test_a_caller_that_leaves_does_not_cancel_the_others() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def lookup() -> str:
        await release.wait()
        return "row"

    leaving = asyncio.create_task(flights.run("k", lookup))
    staying = asyncio.create_task(flights.run("k", lookup))
    await asyncio.sleep(0)
    leaving.cancel()
    release.set()
    assert await staying == "row"
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_failure_reaches_every_caller() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def lookup() -> str:
        await asyncio.sleep(0.01)
        raise LookupError("database away")

    results = await asyncio.gather(*(flights.run("k", lookup) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
