"""What counts as a store outage (Redis or PostgreSQL unreachable or out of connections), as opposed
to an error in the request or the data: the ingress answers it with 503 and Retry-After, a live
session host waits it out."""

from __future__ import annotations


def default_outage_exceptions() -> tuple[type[BaseException], ...]:
    """Errors that mean Redis or the database is unreachable or overloaded, not that the request is wrong."""
    found: list[type[BaseException]] = [ConnectionError]
    try:
        import redis.exceptions as redis_errors

        found += [redis_errors.ConnectionError, redis_errors.TimeoutError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import sqlalchemy.exc as sa_errors

        found += [sa_errors.OperationalError, sa_errors.InterfaceError, sa_errors.DisconnectionError]
        found += [sa_errors.TimeoutError]  # connection pool exhausted
    except ImportError:  # pragma: no cover
        pass
    try:
        import asyncpg.exceptions as pg_errors

        found += [
            pg_errors.PostgresConnectionError,
            pg_errors.CannotConnectNowError,
            pg_errors.TooManyConnectionsError,
        ]
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return tuple(found)
