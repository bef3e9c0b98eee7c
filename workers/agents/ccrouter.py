"""``ccrouter`` (alias ``ccr``): Claude Code through a Claude Code Router of the session's own, so an
organization's sessions use its providers (OpenAI-compatible, Gemini, Vertex AI, ...).

Per session: a fresh port and access key, the router's config.json with the tenant's provider keys
in the session's private directory (mode 0600, the only place those keys are written; no agent
mount shows it), ``ccr start`` as a sidecar in a sandbox of its own, and Claude Code with
``ANTHROPIC_BASE_URL`` at that router. Two sessions never share a router. A platform-level key
(``AGENTAPI_VERTEX_AI_API_KEY``) is never written to a file: the config names it as
``$CCR_PLATFORM_API_KEY`` and the router reads it from its environment (ccr interpolates variables).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from pydantic import ValidationError

from schemas.ccrouter import VERTEX_TRANSFORMERS, CCRouterSettings, router_config
from services.agents.binaries import agent_binary
from workers.agents.base import LaunchContext, Sidecar
from workers.agents.claude import ClaudeAdapter
from workers.agents.custom import write_private
from workers.sidecars import free_port

PLATFORM_KEY_VARIABLE = "CCR_PLATFORM_API_KEY"
PLATFORM_KEY_REFERENCE = f"${{{PLATFORM_KEY_VARIABLE}}}"


class CCRouterAdapter(ClaudeAdapter):
    name: ClassVar[str] = "ccrouter"
    aliases: ClassVar[tuple[str, ...]] = ("ccr",)
    uses_tenant_settings: ClassVar[bool] = True

    def __init__(self) -> None:
        self.port = 0
        self._claude: LaunchContext | None = None
        self._router_env: dict[str, str] = {}
        self._home: Path | None = None
        self._upstreams: tuple[str, ...] = ()
        self._tenant_upstreams: tuple[str, ...] = ()

    def prepare(self, ctx: LaunchContext) -> None:
        try:
            spec = CCRouterSettings.model_validate(ctx.tenant_settings.get("ccrouter"))
        except ValidationError as exc:
            raise ValueError(
                "the organization has no valid ccrouter settings (PUT /api/v1/settings)"
            ) from exc
        # The deployment's VERTEX_AI_* values are defaults a tenant's own settings override.
        defaults = ctx.agent_env
        default_key = defaults.get("VERTEX_AI_API_KEY")
        self.port, access_key = free_port(), secrets.token_urlsafe(24)
        self._home = ctx.private or ctx.home
        config = router_config(
            spec, ctx.tenant_secrets, self.port, access_key, PLATFORM_KEY_REFERENCE if default_key else None
        )
        write_private(self._home / ".claude-code-router" / "config.json", json.dumps(config))
        # The router keeps a reference count in its temp dir: the session's own, not the host's.
        tmp = self._home / ".tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        self._router_env = {"HOME": str(self._home), "TMPDIR": str(tmp)}
        if default_key:
            self._router_env[PLATFORM_KEY_VARIABLE] = default_key
        self._upstreams = ()
        self._tenant_upstreams = tuple(provider.api_base_url for provider in spec.providers)
        if any(p.transformer in VERTEX_TRANSFORMERS for p in spec.providers):
            vertex = spec.vertex
            project = (vertex and vertex.project_id) or defaults.get("VERTEX_AI_PROJECT_ID")
            location = (vertex and vertex.location) or defaults.get("VERTEX_AI_LOCATION")
            if project:
                self._router_env["GOOGLE_CLOUD_PROJECT"] = project
            if location:
                self._router_env["GOOGLE_CLOUD_LOCATION"] = location
                # What the Vertex transformers call, besides Google's token endpoint; a location the
                # tenant set makes it a name of the tenant's, checked like a provider's.
                regional = f"https://{location}-aiplatform.googleapis.com"
                if vertex and vertex.location:
                    self._tenant_upstreams += (regional,)
                else:
                    self._upstreams += (regional,)
            self._upstreams += ("https://oauth2.googleapis.com",)
            if vertex and vertex.credentials_secret in ctx.tenant_secrets:
                credentials = self._home / "vertex-credentials.json"
                write_private(credentials, ctx.tenant_secrets[vertex.credentials_secret])
                self._router_env["GOOGLE_APPLICATION_CREDENTIALS"] = str(credentials)
        # Claude Code sees only the router: its URL and the session's access key, never a provider key.
        self._claude = replace(
            ctx,
            agent_env={
                "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{self.port}",
                "ANTHROPIC_API_KEY": access_key,
            },
            tenant_settings={},
            tenant_secrets={},
        )
        super().prepare(self._claude)

    def sidecars(self, ctx: LaunchContext) -> list[Sidecar]:
        return [
            Sidecar(
                "ccr",
                [agent_binary("ccr"), "start"],
                self.port,
                self._router_env,
                home=self._home,
                endpoints=self._upstreams,
                tenant_endpoints=self._tenant_upstreams,
            )
        ]

    def command(self, ctx: LaunchContext) -> list[str]:
        return super().command(self._claude or ctx)

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        return super().environment(self._claude or ctx)
