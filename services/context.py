"""What a service is given: the backends it works with, and who acts.

Both are plain types so that a route (``api.state.Resources``) and an actor
(``workers.context.WorkerContext``) pass their own objects: each has these attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from events.streams import Names
from schemas.db import TenantContext
from schemas.settings import Settings


class Backends(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def redis(self) -> Redis: ...

    @property
    def names(self) -> Names: ...


@dataclass(frozen=True)
class Actor:
    """Who acts, in which organization, with which effective role (``superadmin`` for a platform
    superadmin): a verified caller in the ingress, or the user a webhook runs as in a worker."""

    org_id: UUID
    user_id: UUID
    role: str

    @property
    def tenant(self) -> TenantContext:
        """The row-level-security scope this actor reads and writes in."""
        return TenantContext(org_id=self.org_id, user_id=self.user_id, role=self.role)
