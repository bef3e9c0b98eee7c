"""System prompts: global (superadmins), organization (admins) and user (self) scopes, and the
preview of what a session would get."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import Parameter
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, or_, select

from api.auth import Principal
from api.pagination import cursor_value, encode_cursor
from api.problems import StrictBody
from api.state import Resources, resources
from api.tenancy import tenant_context
from schemas.db import TenantContext, tenant_transaction
from schemas.prompts import (
    MAX_PROMPT_CHARS,
    PromptContext,
    TemplateProblem,
    check_template,
    compose,
    injection_phrases,
)
from schemas.roles import ADMIN_ROLES
from schemas.tables import Membership, Organization, SystemPrompt, utcnow
from workers.agents import canonical_agent_type


class PromptIn(StrictBody):
    scope: Literal["global", "organization", "user"] = "user"
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
    content: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    priority: int = Field(0, ge=-1000, le=1000, description="higher first, within a scope")
    is_template: bool = False
    enabled: bool = True


class PromptOut(BaseModel):
    id: UUID
    scope: str
    org_id: UUID | None
    user_id: UUID | None
    name: str
    content: str
    priority: int
    is_template: bool
    enabled: bool
    created_at: datetime
    updated_at: datetime
    warnings: list[str] = Field(
        default_factory=list, description="injection phrases that will be neutralized"
    )


class PromptPage(BaseModel):
    prompts: list[PromptOut]
    next_cursor: str | None


class PreviewOut(BaseModel):
    user_id: UUID
    agent_type: str
    prompt: str


def _out(row: SystemPrompt) -> PromptOut:
    warnings = injection_phrases(row.content) if row.scope == "user" else []
    return PromptOut(**row.model_dump(exclude={"warnings"}), warnings=warnings)


def _visible(query, ctx: TenantContext):
    """Global prompts, the org's, and the caller's own (RLS enforces the same underneath)."""
    return query.where(
        or_(
            col(SystemPrompt.org_id).is_(None),
            (col(SystemPrompt.org_id) == ctx.org_id) & col(SystemPrompt.user_id).is_(None),
            (SystemPrompt.org_id == ctx.org_id) & (SystemPrompt.user_id == ctx.user_id),
        )
    )


def _check_scope(ctx: TenantContext, scope: str) -> None:
    if scope == "global" and ctx.role != "superadmin":
        raise PermissionDeniedException("only platform superadmins manage global prompts")
    if scope == "organization" and ctx.role not in ADMIN_ROLES:
        raise PermissionDeniedException("only organization admins manage organization prompts")


async def _validate(data: PromptIn) -> None:
    """A template renders within its budget at save or it is a 422; off the event loop either way."""
    if data.is_template:
        try:
            await asyncio.to_thread(check_template, data.content)
        except TemplateProblem as exc:
            raise ValidationException(str(exc), extra=[{"key": "content", "message": str(exc)}]) from exc


async def find_prompt(res: Resources, ctx: TenantContext, prompt_id: UUID) -> SystemPrompt:
    async with tenant_transaction(res.engine, ctx) as db:
        row = (await db.exec(_visible(select(SystemPrompt), ctx).where(SystemPrompt.id == prompt_id))).first()
    if row is None:
        raise NotFoundException("no such prompt")
    return row


async def composed_prompt(res: Resources, org_id: UUID, user_id: UUID, agent_type: str) -> str:
    """What a session of ``user_id`` gets (read under that user's own context)."""
    ctx = TenantContext(org_id=org_id, user_id=user_id, role="member")
    async with tenant_transaction(res.engine, ctx) as db:
        org = await db.get(Organization, org_id)
        rows = list(await db.exec(_visible(select(SystemPrompt), ctx)))
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
        raise ClientException(f"a system prompt cannot be rendered: {exc}", status_code=422) from exc


def _duplicate(name: str) -> ClientException:
    return ClientException(f"a prompt named {name!r} already exists in this scope", status_code=409)


class PromptController(Controller):
    path = "/api/v1/prompts"
    tags = ("prompts",)

    @post("/", status_code=201)
    async def create(
        self, data: PromptIn, request: Request[Principal, str, State], state: State
    ) -> PromptOut:
        res = resources(state)
        ctx = tenant_context(request.user)
        _check_scope(ctx, data.scope)
        await _validate(data)
        row = SystemPrompt(
            id=uuid4(),
            org_id=None if data.scope == "global" else ctx.org_id,
            user_id=ctx.user_id if data.scope == "user" else None,
            **data.model_dump(),
        )
        try:
            async with tenant_transaction(res.engine, ctx) as db:
                db.add(row)
        except IntegrityError as exc:
            raise _duplicate(data.name) from exc
        return _out(row)

    @get("/")
    async def list_prompts(
        self,
        request: Request[Principal, str, State],
        state: State,
        # Not named `scope`: Litestar injects the ASGI scope under that name.
        prompt_scope: Annotated[
            Literal["global", "organization", "user"] | None, Parameter(query="scope")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=400)] = None,
    ) -> PromptPage:
        res = resources(state)
        ctx = tenant_context(request.user)
        query = _visible(select(SystemPrompt), ctx)
        if prompt_scope:
            query = query.where(SystemPrompt.scope == prompt_scope)
        if cursor:
            query = query.where(col(SystemPrompt.id) > cursor_value(cursor, UUID))
        async with tenant_transaction(res.engine, ctx) as db:
            rows = list(await db.exec(query.order_by(col(SystemPrompt.id)).limit(limit + 1)))
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].id) if len(rows) > limit else None
        return PromptPage(prompts=[_out(r) for r in page], next_cursor=next_cursor)

    @get("/preview")
    async def preview(
        self,
        request: Request[Principal, str, State],
        state: State,
        agent_type: Annotated[str, Parameter(max_length=32)] = "claude",
        user_id: UUID | None = None,
    ) -> PreviewOut:
        """The composed system prompt a session would get: the caller's, or (admins) a member's."""
        res = resources(state)
        ctx = tenant_context(request.user)
        try:
            agent = canonical_agent_type(agent_type)
        except ValueError as exc:
            raise ValidationException(str(exc), extra=[{"key": "agent_type", "message": str(exc)}]) from exc
        target = user_id or ctx.user_id
        assert target is not None and ctx.org_id is not None
        if target != ctx.user_id:
            if ctx.role not in ADMIN_ROLES:
                raise PermissionDeniedException("only organization admins preview another member's prompt")
            async with tenant_transaction(res.engine, ctx) as db:
                member = (
                    await db.exec(
                        select(Membership.id).where(
                            Membership.org_id == ctx.org_id, Membership.user_id == target
                        )
                    )
                ).first()
            if member is None:
                raise NotFoundException("no such member in this organization")
        return PreviewOut(
            user_id=target, agent_type=agent, prompt=await composed_prompt(res, ctx.org_id, target, agent)
        )

    @get("/{prompt_id:uuid}")
    async def get_prompt(
        self, prompt_id: UUID, request: Request[Principal, str, State], state: State
    ) -> PromptOut:
        return _out(await find_prompt(resources(state), tenant_context(request.user), prompt_id))

    @put("/{prompt_id:uuid}")
    async def replace(
        self, prompt_id: UUID, data: PromptIn, request: Request[Principal, str, State], state: State
    ) -> PromptOut:
        res = resources(state)
        ctx = tenant_context(request.user)
        row = await find_prompt(res, ctx, prompt_id)
        _check_scope(ctx, row.scope)
        if data.scope != row.scope:
            raise ValidationException(
                "scope cannot change; create a new prompt instead",
                extra=[{"key": "scope", "message": f"is {row.scope}"}],
            )
        await _validate(data)
        for name in ("name", "content", "priority", "is_template", "enabled"):
            setattr(row, name, getattr(data, name))
        row.updated_at = utcnow()
        try:
            async with tenant_transaction(res.engine, ctx) as db:
                await db.merge(row)
        except IntegrityError as exc:
            raise _duplicate(data.name) from exc
        return _out(row)

    @delete("/{prompt_id:uuid}", status_code=204)
    async def remove(self, prompt_id: UUID, request: Request[Principal, str, State], state: State) -> None:
        res = resources(state)
        ctx = tenant_context(request.user)
        row = await find_prompt(res, ctx, prompt_id)
        _check_scope(ctx, row.scope)
        async with tenant_transaction(res.engine, ctx) as db:
            stored = await db.get(SystemPrompt, row.id)
            if stored is not None:
                await db.delete(stored)
