"""System prompts: global (superadmins), organization (admins) and user (self) scopes, and the
preview of what a session would get (``services.prompts`` does the work)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from litestar.params import Parameter
from pydantic import BaseModel, Field

from api.auth import Principal
from api.pagination import cursor_value, encode_cursor
from api.problems import StrictBody
from api.state import resources
from api.tenancy import tenant_context
from schemas.prompts import MAX_PROMPT_CHARS, injection_phrases
from schemas.tables import SystemPrompt
from services import prompts
from services.prompts import PromptFields


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


def _fields(data: PromptIn) -> PromptFields:
    return PromptFields(**data.model_dump())


class PromptController(Controller):
    path = "/api/v1/prompts"
    tags = ("prompts",)

    @post("/", status_code=201)
    async def create(
        self, data: PromptIn, request: Request[Principal, str, State], state: State
    ) -> PromptOut:
        return _out(
            await prompts.create_prompt(resources(state), tenant_context(request.user), _fields(data))
        )

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
        actor = tenant_context(request.user)
        after = cursor_value(cursor, UUID) if cursor else None
        rows = await prompts.list_prompts(resources(state), actor, prompt_scope, limit, after)
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
        target, agent, prompt = await prompts.preview_prompt(
            resources(state), tenant_context(request.user), agent_type, user_id
        )
        return PreviewOut(user_id=target, agent_type=agent, prompt=prompt)

    @get("/{prompt_id:uuid}")
    async def get_prompt(
        self, prompt_id: UUID, request: Request[Principal, str, State], state: State
    ) -> PromptOut:
        return _out(await prompts.find_prompt(resources(state), tenant_context(request.user), prompt_id))

    @put("/{prompt_id:uuid}")
    async def replace(
        self, prompt_id: UUID, data: PromptIn, request: Request[Principal, str, State], state: State
    ) -> PromptOut:
        res, actor = resources(state), tenant_context(request.user)
        return _out(await prompts.replace_prompt(res, actor, prompt_id, _fields(data)))

    @delete("/{prompt_id:uuid}", status_code=204)
    async def remove(self, prompt_id: UUID, request: Request[Principal, str, State], state: State) -> None:
        await prompts.delete_prompt(resources(state), tenant_context(request.user), prompt_id)
