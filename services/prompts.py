"""System prompts: global (superadmins), organization (admins) and user (self) scopes, and the
prompt a session gets, composed from all three."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlmodel import and_, col, or_, select

from schemas.db import MemberContext, TenantContext, tenant_transaction
from schemas.prompts import PromptContext, TemplateProblem, check_template, compose
from schemas.roles import ADMIN_ROLES
from schemas.tables import Membership, Organization, SystemPrompt, utcnow
from services.agents import canonical_agent_type
from services.context import Backends
from services.errors import Conflict, Forbidden, Invalid, NotFound, Unprocessable

EDITABLE = ("name", "content", "priority", "is_template", "enabled")

Query = TypeVar("Query", bound=Any)


@dataclass(frozen=True)
class PromptFields:
    scope: str
    name: str
    content: str
    priority: int
    is_template: bool
    enabled: bool


def visible(query: Query, ctx: TenantContext) -> Query:
    """Global prompts, the org's, and the caller's own (RLS enforces the same underneath)."""
    in_org = col(SystemPrompt.org_id) == ctx.org_id
    return query.where(
        or_(
            col(SystemPrompt.org_id).is_(None),
            and_(in_org, col(SystemPrompt.user_id).is_(None)),
            and_(in_org, col(SystemPrompt.user_id) == ctx.user_id),
        )
    )


def _check_scope(actor: MemberContext, scope: str) -> None:
    if scope == "global" and actor.role != "superadmin":
        raise Forbidden("only platform superadmins manage global prompts")
    if scope == "organization" and actor.role not in ADMIN_ROLES:
        raise Forbidden("only organization admins manage organization prompts")


async def _validate(fields: PromptFields) -> None:
    """A template renders within its budget at save or it is refused; off the event loop either way."""
    if fields.is_template:
        try:
            await asyncio.to_thread(check_template, fields.content)
        except TemplateProblem as exc:
            raise Invalid(str(exc), [("content", str(exc))]) from exc


def _duplicate(name: str) -> Conflict:
    return Conflict(f"a prompt named {name!r} already exists in this scope")


async def find_prompt(backends: Backends, actor: MemberContext, prompt_id: UUID) -> SystemPrompt:
    async with tenant_transaction(backends.engine, actor) as db:
        row = (
            await db.exec(visible(select(SystemPrompt), actor).where(SystemPrompt.id == prompt_id))
        ).first()
    if row is None:
        raise NotFound("no such prompt")
    return row


async def list_prompts(
    backends: Backends, actor: MemberContext, scope: str | None, limit: int, after: UUID | None
) -> list[SystemPrompt]:
    """In id order after ``after``; up to ``limit + 1`` rows, so the caller can tell whether more follow."""
    query = visible(select(SystemPrompt), actor)
    if scope:
        query = query.where(SystemPrompt.scope == scope)
    if after is not None:
        query = query.where(col(SystemPrompt.id) > after)
    async with tenant_transaction(backends.engine, actor) as db:
        return list(await db.exec(query.order_by(col(SystemPrompt.id)).limit(limit + 1)))


async def create_prompt(backends: Backends, actor: MemberContext, fields: PromptFields) -> SystemPrompt:
    _check_scope(actor, fields.scope)
    await _validate(fields)
    row = SystemPrompt(
        id=uuid4(),
        org_id=None if fields.scope == "global" else actor.org_id,
        user_id=actor.user_id if fields.scope == "user" else None,
        scope=fields.scope,
        **{name: getattr(fields, name) for name in EDITABLE},
    )
    try:
        async with tenant_transaction(backends.engine, actor) as db:
            db.add(row)
    except IntegrityError as exc:
        raise _duplicate(fields.name) from exc
    return row


async def replace_prompt(
    backends: Backends, actor: MemberContext, prompt_id: UUID, fields: PromptFields
) -> SystemPrompt:
    row = await find_prompt(backends, actor, prompt_id)
    _check_scope(actor, row.scope)
    if fields.scope != row.scope:
        raise Invalid("scope cannot change; create a new prompt instead", [("scope", f"is {row.scope}")])
    await _validate(fields)
    for name in EDITABLE:
        setattr(row, name, getattr(fields, name))
    row.updated_at = utcnow()
    try:
        async with tenant_transaction(backends.engine, actor) as db:
            await db.merge(row)
    except IntegrityError as exc:
        raise _duplicate(fields.name) from exc
    return row


async def delete_prompt(backends: Backends, actor: MemberContext, prompt_id: UUID) -> None:
    row = await find_prompt(backends, actor, prompt_id)
    _check_scope(actor, row.scope)
    async with tenant_transaction(backends.engine, actor) as db:
        stored = await db.get(SystemPrompt, row.id)
        if stored is not None:
            await db.delete(stored)


async def composed_prompt(backends: Backends, org_id: UUID, user_id: UUID, agent_type: str) -> str:
    """What a session of ``user_id`` gets (read under that user's own context)."""
    ctx = TenantContext(org_id=org_id, user_id=user_id, role="member")
    async with tenant_transaction(backends.engine, ctx) as db:
        org = await db.get(Organization, org_id)
        rows = list(await db.exec(visible(select(SystemPrompt), ctx)))
    context = PromptContext(
        user_id=str(user_id),
        org_id=str(org_id),
        org_name=org.name if org else "",
        agent_type=agent_type,
        today=datetime.now(UTC).date(),
    )
    try:
        return await asyncio.to_thread(compose, rows, context)
    except TemplateProblem as exc:  # saved templates are checked; this guards older rows
        raise Unprocessable(f"a system prompt cannot be rendered: {exc}") from exc


async def preview_prompt(
    backends: Backends, actor: MemberContext, agent_type: str, user_id: UUID | None
) -> tuple[UUID, str, str]:
    """The composed system prompt a session would get: the actor's, or (admins) a member's. The
    user, the canonical agent type and the prompt."""
    try:
        agent = canonical_agent_type(agent_type)
    except ValueError as exc:
        raise Invalid(str(exc), [("agent_type", str(exc))]) from exc
    target = user_id or actor.user_id
    if target != actor.user_id:
        if actor.role not in ADMIN_ROLES:
            raise Forbidden("only organization admins preview another member's prompt")
        async with tenant_transaction(backends.engine, actor) as db:
            member = (
                await db.exec(
                    select(Membership.id).where(
                        Membership.org_id == actor.org_id, Membership.user_id == target
                    )
                )
            ).first()
        if member is None:
            raise NotFound("no such member in this organization")
    return target, agent, await composed_prompt(backends, actor.org_id, target, agent)
