"""Domain errors: what a service refuses and why, with no HTTP in it.

``api/problems.py`` answers each kind with one status (the class's ``status``) as problem+json; a
worker logs or retries them. ``detail`` is said to the caller, so it never holds a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DomainError(Exception):
    """A refusal; ``extensions`` become extra members of the problem document."""

    status: int = 400

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class NotFound(DomainError):
    """No such thing, or one the actor may not know exists (another tenant's reads as none)."""

    status = 404


class Unauthenticated(DomainError):
    """The caller's credentials (a token, a signature) are missing or do not verify."""

    status = 401


class Forbidden(DomainError):
    status = 403


class Conflict(DomainError):
    """The thing exists but is not in a state that allows this now (busy, ended, a duplicate)."""

    status = 409


class Gone(DomainError):
    """It is over for good: retrying will never help."""

    status = 410


class TooLarge(DomainError):
    status = 413

    def __init__(self, detail: str, *, limit_bytes: int) -> None:
        super().__init__(detail, limit_bytes=limit_bytes)


class Invalid(DomainError):
    """Input refused: with ``errors`` as ``(field, message)`` pairs a 422 naming them, without a
    400 (nothing field-shaped to blame, such as a cursor or a header)."""

    def __init__(self, detail: str, errors: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(detail)
        self.errors = list(errors)
        self.status = 422 if self.errors else 400

    @classmethod
    def field(cls, field: str, message: str, detail: str | None = None) -> Invalid:
        return cls(detail or f"{field}: {message}", [(field, message)])


class Unprocessable(DomainError):
    """Well-formed input that cannot be acted on as things stand (a stored template that no longer
    renders)."""

    status = 422


class TooMany(DomainError):
    """A quota or rate is used up; ``retry_after`` seconds is when trying again may help."""

    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """Something the service depends on cannot answer now."""

    status = 503

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
