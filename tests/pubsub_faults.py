"""Faults of a process's Redis pub/sub subscription, made with real Redis: what a cache that trusts
its invalidation channel must survive."""

from __future__ import annotations

from redis.asyncio import Redis


async def cut_subscriptions(aredis: Redis, client_name: str) -> None:
    """Kill the pub/sub connections of the client named ``client_name``; there must be one, or the
    test would pass without cutting anything."""
    subscribers = [c for c in await aredis.client_list(_type="pubsub") if c["name"] == client_name]
    assert subscribers
    for subscriber in subscribers:
        await aredis.client_kill_filter(_id=subscriber["id"])
