"""Process-wide resources of the ingress, opened at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from litestar import Litestar
from litestar.datastructures import State
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import TokenVerifier
from api.event_hub import EventHub
from api.sse import OpenStreams
from events.batch import RedisBatch
from events.connection import batch_redis, pooled_redis
from events.gateway_tokens import GatewayTokens
from events.streams import Names
from schemas.db import dispose_engine, open_engine, rls_bypass_reason
from schemas.settings import Settings

# A request waits this long for a Redis connection in a burst, then gets a 503 with Retry-After.
REDIS_CONNECTION_WAIT_SECONDS = 5


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    redis: Redis
    names: Names
    hub: EventHub
    verifier: TokenVerifier
    # The per-request writes (rate limits, messages, audit events) of one loop turn, as one pipeline.
    batch: RedisBatch
    gateway_tokens: GatewayTokens
    # The SSE responses under way; ended when the process starts shutting down (api.shutdown).
    streams: OpenStreams = field(default_factory=OpenStreams)

    @property
    def draining(self) -> asyncio.Event:
        """Set when the process starts shutting down: SSE streams end, /ready fails."""
        return self.streams.draining


def resources(state: State) -> Resources:
    return state["resources"]


def lifespan(settings: Settings):
    @asynccontextmanager
    async def _lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = open_engine(settings, pool_size=settings.db_pool_size)
        if settings.environment == "production":
            # Connected as a role RLS does not hold, every tenant would read every other's rows.
            reason = await rls_bypass_reason(engine, settings.db_platform_role)
            if reason is None and not settings.is_sqlite and not settings.platform_database_url:
                reason = "AGENTAPI_PLATFORM_DATABASE_URL is not set (webhook deliveries and superadmin work need it)"
            if reason:
                await dispose_engine(engine)
                raise RuntimeError(
                    f"refusing to serve: {reason}; AGENTAPI_DATABASE_URL must name the service role and"
                    " AGENTAPI_PLATFORM_DATABASE_URL the platform role"
                )
        redis = pooled_redis(
            settings.redis_url, wait_seconds=REDIS_CONNECTION_WAIT_SECONDS, health_check_interval=30
        )
        # The batch's own pool: its pipelines carry one deadline each, not a timeout per reply.
        batched = batch_redis(
            settings.redis_url, wait_seconds=REDIS_CONNECTION_WAIT_SECONDS, health_check_interval=30
        )
        names = Names(settings.redis_prefix)
        hub = EventHub(redis, names)
        verifier = TokenVerifier(settings)
        tokens = GatewayTokens(redis, names, settings.mcp_gateway_token_cache_seconds)
        await hub.start()
        await tokens.start()
        app.state["resources"] = Resources(
            settings, engine, redis, names, hub, verifier, RedisBatch(batched), tokens
        )
        try:
            yield
        finally:
            await tokens.stop()
            await hub.stop()
            await verifier.aclose()
            await batched.aclose()
            await redis.aclose()
            await dispose_engine(engine)

    return _lifespan
