"""A tenant's Claude Code Router settings (``settings.ccrouter`` in tenant settings) and the
per-session router config built from them.

Provider keys never live in ``settings``: a provider names a tenant secret (``api_key_secret``), and
only the sessions worker opens it, into the session's own 0600 config file.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The transformers Claude Code Router 2.x ships (checked against its bundled cli.js). None means
# an OpenAI-compatible chat-completions endpoint, which needs no transformer.
TRANSFORMERS = (
    "anthropic",
    "cerebras",
    "cleancache",
    "customparams",
    "deepseek",
    "enhancetool",
    "forcereasoning",
    "gemini",
    "groq",
    "maxcompletiontokens",
    "maxtoken",
    "openai-responses",
    "openrouter",
    "reasoning",
    "sampling",
    "streamoptions",
    "tooluse",
    "vercel",
    "vertex-claude",
    "vertex-gemini",
)
# Vertex transformers authenticate with Google credentials, not an API key.
VERTEX_TRANSFORMERS = ("vertex-claude", "vertex-gemini")
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ROUTE = re.compile(r"^([^,]+),(.+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Provider(_Strict):
    name: str = Field(pattern=NAME)
    api_base_url: str = Field(max_length=2048, description="the provider's full endpoint URL")
    models: list[str] = Field(min_length=1, max_length=50)
    transformer: Literal[TRANSFORMERS] | None = Field(  # type: ignore[valid-type]  # a Literal of a tuple constant: pydantic expands it, mypy cannot
        None, description="Claude Code Router transformer; none for OpenAI-compatible endpoints"
    )
    api_key_secret: str | None = Field(
        None, pattern=NAME, description="name of the tenant secret holding this provider's API key"
    )


class Vertex(_Strict):
    project_id: str | None = Field(None, max_length=128)
    location: str | None = Field(None, max_length=64)
    credentials_secret: str | None = Field(
        None, pattern=NAME, description="name of the tenant secret holding a service-account JSON key"
    )


class Router(_Strict):
    default: str
    background: str | None = None
    think: str | None = None
    longContext: str | None = None
    longContextThreshold: int | None = Field(None, ge=1000)


class CCRouterSettings(_Strict):
    providers: list[Provider] = Field(min_length=1, max_length=20)
    router: Router
    vertex: Vertex | None = None

    @model_validator(mode="after")
    def _routes_name_known_models(self) -> CCRouterSettings:
        models = {(p.name, m) for p in self.providers for m in p.models}
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ValueError("provider names must be unique")
        for rule in ("default", "background", "think", "longContext"):
            route = getattr(self.router, rule)
            if route is None:
                continue
            found = ROUTE.match(route)
            if not found or (found.group(1), found.group(2)) not in models:
                raise ValueError(
                    f"router.{rule} must be 'provider,model' naming a configured provider's model"
                )
        return self


def missing_keys(spec: CCRouterSettings, secrets: set[str], deployment_vertex_key: bool) -> list[str]:
    """Fields whose secret a session would not find: a provider without a key, or naming an absent one."""
    missing = []
    for index, provider in enumerate(spec.providers):
        field = f"settings.ccrouter.providers[{index}].api_key_secret"
        if provider.transformer in VERTEX_TRANSFORMERS:
            credentials = spec.vertex.credentials_secret if spec.vertex else None
            if credentials is None or credentials not in secrets:
                missing.append("settings.ccrouter.vertex.credentials_secret")
        elif provider.api_key_secret is None:
            if not (provider.transformer == "gemini" and deployment_vertex_key):
                missing.append(field)
        elif provider.api_key_secret not in secrets:
            missing.append(field)
    return sorted(set(missing))


def router_config(
    spec: CCRouterSettings, secrets: dict[str, str], port: int, access_key: str, default_key: str | None
) -> dict[str, Any]:
    """Claude Code Router's config.json for one session: its own port and access key, the tenant's
    providers with their keys opened."""
    providers = []
    for provider in spec.providers:
        entry: dict[str, Any] = {
            "name": provider.name,
            "api_base_url": provider.api_base_url,
            "models": provider.models,
            "api_key": secrets.get(provider.api_key_secret or "", default_key or ""),
        }
        if provider.transformer:
            entry["transformer"] = {"use": [provider.transformer]}
        providers.append(entry)
    router = spec.router.model_dump(exclude_none=True)
    return {
        "HOST": "127.0.0.1",
        "PORT": port,
        "APIKEY": access_key,
        "LOG": False,
        "NON_INTERACTIVE_MODE": False,
        "Providers": providers,
        "Router": router,
    }
