"""What a service is given: the backends it works with (a route passes its
``api.state.Resources``, an actor its ``workers.context.WorkerContext``: each has these attributes)
and who acts, a ``schemas.db.MemberContext`` (the ingress makes it from the verified token, a worker
from the job, such as the user a webhook runs as)."""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from events.batch import RedisBatch
from events.envelope import new_event_id
from events.streams import Names
from schemas.settings import Settings
from services.observability import correlation_id


class Backends(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def redis(self) -> Redis: ...

    @property
    def names(self) -> Names: ...


class IngressBackends(Backends, Protocol):
    """The ingress's backends also batch the Redis commands of concurrent requests."""

    @property
    def batch(self) -> RedisBatch: ...


def current_correlation_id() -> str:
    """The id that ties what this request or job causes together: the caller's (a request's
    header, a job's envelope), else a new one."""
    return correlation_id.get() or new_event_id()
