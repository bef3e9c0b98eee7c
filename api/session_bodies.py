"""Request bodies that start a session, shared by the sessions and chat endpoints."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from api.problems import StrictBody
from services.agents import canonical_agent_type
from services.sessions.start import NewSession

MAX_MESSAGE_BYTES = 100_000


class CreateSession(StrictBody):
    agent_type: str = Field(
        min_length=1, max_length=32, description="claude, ccrouter (ccr), codex, ... or custom"
    )
    prompt: str | None = Field(None, max_length=MAX_MESSAGE_BYTES, description="first message for the agent")
    title: str | None = Field(None, max_length=200)
    custom_agent: str | None = Field(None, max_length=64, description="allowlisted command name, for custom")

    @field_validator("agent_type")
    @classmethod
    def _known_agent(cls, value: str) -> str:
        return canonical_agent_type(value)

    @model_validator(mode="after")
    def _custom_needs_a_command(self) -> CreateSession:
        if (self.agent_type == "custom") != (self.custom_agent is not None):
            raise ValueError("custom_agent is required for agent_type custom, and only for it")
        return self

    def new_session(self) -> NewSession:
        return NewSession(
            agent_type=self.agent_type, prompt=self.prompt, title=self.title, custom_agent=self.custom_agent
        )
