"""Service settings, read from the environment (prefix ``AGENTAPI_``).

The seed deployment's plain names (``DATABASE_URL``, ``REDIS_URL``, ``SUPABASE_URL``,
``SUPABASE_JWT_SECRET``, ``MAX_CONCURRENT_SESSIONS``, ``SESSION_TIMEOUT``, ``WORKSPACE_ROOT``) are
accepted as aliases so an existing deployment's environment keeps working.
"""

from __future__ import annotations

import ipaddress
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from typing_extensions import TypeIs

from schemas.crypto import KeyRing, KeyRingError

# The ingress path of the per-session MCP gateway.
GATEWAY_PATH = "/api/v1/mcp/gateway"
# Where uploaded files land inside a session's workspace.
UPLOADS_DIR = "uploads"
# Where authorization servers send the browser back after a user approves an MCP connection.
OAUTH_CALLBACK_PATH = "/api/v1/mcp/oauth/callback"
# Object stores a workspace snapshot can go to (S3 covers R2, MinIO and GCS's S3 API by endpoint).
WORKSPACE_STORE_SCHEMES = ("s3", "gs", "file")
MIN_JWT_SECRET_BYTES = 32


Transport = Literal["acp", "pty"]


def is_transport(value: object) -> TypeIs[Transport]:
    return value in get_args(Transport)


def _env(name: str, *plain: str) -> AliasChoices:
    return AliasChoices(f"AGENTAPI_{name}", *plain)


def async_database_url(url: str) -> str:
    """Map a plain driver URL onto the async driver the service uses."""
    for plain, asynchronous in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return asynchronous + url[len(plain) :]
    return url


@lru_cache(maxsize=4)
def _parse_key_ring(spec: str) -> KeyRing:
    return KeyRing.parse(spec)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    environment: Literal["production", "development", "test"] = Field(
        "production", validation_alias=_env("ENVIRONMENT")
    )
    # The service role's connection (no BYPASSRLS); migrations use the owner's URL when given.
    database_url: str = Field(
        "sqlite+aiosqlite:///./.agentapi/dev.db", validation_alias=_env("DATABASE_URL", "DATABASE_URL")
    )
    migrations_database_url: str | None = Field(None, validation_alias=_env("MIGRATIONS_DATABASE_URL"))
    # Name and password of the service role that migrations create on PostgreSQL.
    db_service_role: str = Field(
        "agentapi_app", pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=_env("DB_SERVICE_ROLE")
    )
    db_service_password: SecretStr | None = Field(None, validation_alias=_env("DB_SERVICE_PASSWORD"))
    # Cross-organization work (superadmin requests, webhook lookup, the audit writer, retention, key
    # rotation, the lifecycle reconciler) runs on a connection of its own, as the platform role:
    # Row-Level Security lets ``app.role=superadmin`` cross organizations only for members of that
    # role, so the service role cannot grant itself every tenant by setting a variable.
    platform_database_url: str | None = Field(None, validation_alias=_env("PLATFORM_DATABASE_URL"))
    db_platform_role: str = Field(
        "agentapi_platform", pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=_env("DB_PLATFORM_ROLE")
    )
    db_platform_password: SecretStr | None = Field(None, validation_alias=_env("DB_PLATFORM_PASSWORD"))
    db_pool_size: int = Field(10, ge=1, le=200, validation_alias=_env("DB_POOL_SIZE"))

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL", "REDIS_URL"))
    redis_prefix: str = Field("agentapi:", min_length=1, validation_alias=_env("REDIS_PREFIX"))
    event_log_maxlen: int = Field(10_000, ge=100, validation_alias=_env("EVENT_LOG_MAXLEN"))
    # A work-stream entry read but not acknowledged for this long is taken over by another dispatcher.
    dispatch_claim_idle_ms: int = Field(30_000, ge=100, validation_alias=_env("DISPATCH_CLAIM_IDLE_MS"))
    # An idle tools worker waits this long for an enqueue's wake-up before it fetches again (an
    # enqueue ends the wait at once; the period bounds how late acks and delayed messages are handled).
    # Calls somebody waits on skip Dramatiq (workers/dispatcher.py, DirectLane), so nothing needs a
    # short period any more: 10 ms cost an idle tools worker ~6 % of a core in fetches.
    worker_poll_max_ms: int = Field(1_000, ge=5, le=5_000, validation_alias=_env("WORKER_POLL_MAX_MS"))
    # Allocations between the garbage collector's youngest-generation runs in `serve` and `worker`
    # (Python's default is 700); 0 leaves Python's collector as it is. See services/gc_tuning.py.
    gc_gen0_threshold: int = Field(50_000, ge=0, validation_alias=_env("GC_GEN0_THRESHOLD"))

    jwt_secret: SecretStr | None = Field(None, validation_alias=_env("JWT_SECRET", "SUPABASE_JWT_SECRET"))
    supabase_url: str | None = Field(None, validation_alias=_env("SUPABASE_URL", "SUPABASE_URL"))
    jwks_url: str | None = Field(None, validation_alias=_env("JWKS_URL"))
    jwks_cache_seconds: int = Field(600, ge=0, validation_alias=_env("JWKS_CACHE_SECONDS"))
    jwt_audience: str = Field("authenticated", validation_alias=_env("JWT_AUDIENCE"))
    jwt_issuer: str | None = Field(None, validation_alias=_env("JWT_ISSUER"))
    jwt_leeway_seconds: int = Field(30, ge=0, le=300, validation_alias=_env("JWT_LEEWAY_SECONDS"))

    # Key ring for secrets at rest: "key_id:base64(32 bytes)[,...]"; the first key encrypts.
    encryption_keys: SecretStr | None = Field(None, validation_alias=_env("ENCRYPTION_KEYS"))

    workspace_root: Path = Field(
        Path("./.agentapi/workspaces"), validation_alias=_env("WORKSPACE_ROOT", "WORKSPACE_ROOT")
    )
    # Where workspace snapshots go so a session can move to another host ("s3://bucket/prefix" with
    # the AWS_* variables, "gs://…", or "file:///path"); unset, workspaces stay on WORKSPACE_ROOT only.
    workspace_store_url: str | None = Field(None, validation_alias=_env("WORKSPACE_STORE_URL"))
    # Quiet seconds after a completed turn before its workspace is snapshotted (turns in between coalesce).
    workspace_snapshot_debounce_seconds: float = Field(
        5.0, ge=0, validation_alias=_env("WORKSPACE_SNAPSHOT_DEBOUNCE_SECONDS")
    )
    max_sessions_per_user: int = Field(
        5, ge=1, validation_alias=_env("MAX_SESSIONS_PER_USER", "MAX_CONCURRENT_SESSIONS")
    )
    max_sessions_per_org: int = Field(100, ge=1, validation_alias=_env("MAX_SESSIONS_PER_ORG"))
    session_timeout: int = Field(
        3600, ge=1, description="idle seconds", validation_alias=_env("SESSION_TIMEOUT", "SESSION_TIMEOUT")
    )

    # How long an ended session's input stream and event log stay in Redis (its messages stay in
    # PostgreSQL): long enough for a client to replay the end, then they stop taking memory.
    session_keys_ttl_seconds: int = Field(86_400, ge=60, validation_alias=_env("SESSION_KEYS_TTL_SECONDS"))
    session_max_lifetime: int = Field(
        8 * 3600, ge=60, description="seconds", validation_alias=_env("SESSION_MAX_LIFETIME")
    )
    # A session whose row says active while no host has held it this long is ended (host_lost);
    # longer than a dead host's redelivery (dispatch_claim_idle_ms) so recoverable ones recover first.
    session_host_lost_seconds: float = Field(120.0, gt=0, validation_alias=_env("SESSION_HOST_LOST_SECONDS"))
    reconcile_interval_seconds: float = Field(30.0, gt=0, validation_alias=_env("RECONCILE_INTERVAL_SECONDS"))
    # How long an agent may show a failure (model unreachable, not logged in, rate limited) before
    # its session fails with it: CLIs retry by themselves for minutes, showing only a countdown.
    agent_error_fail_seconds: float = Field(60.0, gt=0, validation_alias=_env("AGENT_ERROR_FAIL_SECONDS"))
    # How long the screen must be still before the agent counts as stable (coder/agentapi: 2 s).
    agent_settle_seconds: float = Field(2.0, gt=0, validation_alias=_env("AGENT_SETTLE_SECONDS"))
    # How long a typed message waits for the agent to react to Enter (pressed again every 3 s)
    # before its turn fails with an agent_error.
    agent_enter_timeout_seconds: float = Field(
        15.0, gt=0, validation_alias=_env("AGENT_ENTER_TIMEOUT_SECONDS")
    )
    # How each agent type that can speak the Agent Client Protocol is driven: over ACP (structured
    # updates, no screen reading) or in the PTY (README "Transports"). ACP wherever its adapter
    # passes the same tests as the PTY one; an operator can fall back per agent type.
    claude_transport: Transport = Field("acp", validation_alias=_env("CLAUDE_TRANSPORT"))
    gemini_transport: Transport = Field("acp", validation_alias=_env("GEMINI_TRANSPORT"))
    codex_transport: Transport = Field("acp", validation_alias=_env("CODEX_TRANSPORT"))
    # An ACP agent's permission request nobody answers is cancelled (a denial) after this long.
    acp_permission_timeout_seconds: float = Field(
        300.0, gt=0, le=86_400, validation_alias=_env("ACP_PERMISSION_TIMEOUT_SECONDS")
    )
    # Bytes a session's workspace may hold; past it the session ends with reason disk_quota.
    workspace_quota_bytes: int | None = Field(
        None, ge=1 << 20, validation_alias=_env("WORKSPACE_QUOTA_BYTES")
    )
    agent_rlimit_as_bytes: int | None = Field(
        None, ge=1 << 24, validation_alias=_env("AGENT_RLIMIT_AS_BYTES")
    )
    agent_rlimit_cpu_seconds: int | None = Field(
        None, ge=1, validation_alias=_env("AGENT_RLIMIT_CPU_SECONDS")
    )
    agent_rlimit_fsize_bytes: int | None = Field(
        None, ge=1 << 20, validation_alias=_env("AGENT_RLIMIT_FSIZE_BYTES")
    )
    agent_rlimit_nproc: int | None = Field(None, ge=1, validation_alias=_env("AGENT_RLIMIT_NPROC"))
    # Model provider the agent CLIs use (deployment default; per-tenant providers come with CCRouter).
    anthropic_base_url: str | None = Field(
        None, validation_alias=_env("ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL")
    )
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=_env("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY")
    )
    # An OpenAI-compatible endpoint (Responses API for codex; chat completions for aider, goose, droid).
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL", "OPENAI_BASE_URL"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY", "OPENAI_API_KEY"))
    openai_model: str | None = Field(None, min_length=1, validation_alias=_env("OPENAI_MODEL"))
    gemini_base_url: str | None = Field(
        None, validation_alias=_env("GEMINI_BASE_URL", "GOOGLE_GEMINI_BASE_URL")
    )
    gemini_api_key: SecretStr | None = Field(None, validation_alias=_env("GEMINI_API_KEY", "GEMINI_API_KEY"))
    gemini_model: str | None = Field(None, min_length=1, validation_alias=_env("GEMINI_MODEL"))
    # Droid signs in to Factory with this key even when it uses the OpenAI-compatible endpoint above.
    factory_api_key: SecretStr | None = Field(
        None, validation_alias=_env("FACTORY_API_KEY", "FACTORY_API_KEY")
    )
    # Deployment defaults for CCRouter's Gemini/Vertex providers (the seed's names); a tenant's own
    # ccrouter settings and secrets take precedence.
    vertex_ai_api_key: SecretStr | None = Field(
        None, validation_alias=_env("VERTEX_AI_API_KEY", "VERTEX_AI_API_KEY")
    )
    vertex_ai_project_id: str | None = Field(
        None, validation_alias=_env("VERTEX_AI_PROJECT_ID", "VERTEX_AI_PROJECT_ID")
    )
    vertex_ai_location: str | None = Field(
        None, validation_alias=_env("VERTEX_AI_LOCATION", "VERTEX_AI_LOCATION")
    )
    # Outbound webhooks: attempts before a delivery is dead-lettered, and the first retry's delay
    # (doubling after each failure).
    webhook_max_attempts: int = Field(8, ge=1, le=30, validation_alias=_env("WEBHOOK_MAX_ATTEMPTS"))
    webhook_backoff_seconds: float = Field(5.0, gt=0, validation_alias=_env("WEBHOOK_BACKOFF_SECONDS"))
    webhook_timeout_seconds: float = Field(10.0, gt=0, validation_alias=_env("WEBHOOK_TIMEOUT_SECONDS"))
    # Event sinks: attempts before a session's undelivered events are dead-lettered, the first retry's
    # delay (doubling up to the cap), and the broker's time to connect and confirm.
    sink_max_attempts: int = Field(12, ge=1, le=100, validation_alias=_env("SINK_MAX_ATTEMPTS"))
    sink_backoff_seconds: float = Field(1.0, gt=0, validation_alias=_env("SINK_BACKOFF_SECONDS"))
    sink_max_backoff_seconds: float = Field(300.0, gt=0, validation_alias=_env("SINK_MAX_BACKOFF_SECONDS"))
    sink_timeout_seconds: float = Field(10.0, gt=0, le=120, validation_alias=_env("SINK_TIMEOUT_SECONDS"))
    # Admin-allowlisted commands for `custom` sessions, by name: {"name": ["argv", ...]} as JSON.
    custom_agents: dict[str, list[str]] = Field(default_factory=dict, validation_alias=_env("CUSTOM_AGENTS"))

    # MCP egress. Plain http is accepted only for loopback hosts, and only when this is on (dev, tests).
    mcp_allow_insecure_http: bool = Field(False, validation_alias=_env("MCP_ALLOW_INSECURE_HTTP"))
    # Hosts or networks MCP servers may live on even though they resolve to private addresses.
    mcp_egress_allowlist: list[str] = Field(
        default_factory=list, validation_alias=_env("MCP_EGRESS_ALLOWLIST")
    )
    # What stdio MCP servers may run, as JSON: argv prefixes (["npx", "-y", "@scope/server"]), or a
    # plain string for a program whose arguments are then free (code-executing flags still refused).
    mcp_stdio_allowlist: list[str | list[str]] = Field(
        default_factory=list, validation_alias=_env("MCP_STDIO_ALLOWLIST")
    )
    # Environment variable names a stdio MCP configuration may set (an allowlist: nothing else passes).
    mcp_stdio_env_allowlist: list[str] = Field(
        default_factory=list, validation_alias=_env("MCP_STDIO_ENV_ALLOWLIST")
    )
    # How tenant processes are confined: "bwrap" (workers/sandbox.py) or, in development only, "none".
    sandbox: Literal["bwrap", "none"] = Field("bwrap", validation_alias=_env("SANDBOX"))
    mcp_call_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, validation_alias=_env("MCP_CALL_TIMEOUT_SECONDS")
    )
    # How long past the call timeout the gateway waits for a tools worker's answer: a call waiting in
    # the stream for a free or restarted worker, the worker's configuration load. Past it the agent
    # is told "no answer in time" (a worker that died with the call in hand never answers).
    mcp_gateway_wait_margin_seconds: float = Field(
        15.0, ge=1, le=3600, validation_alias=_env("MCP_GATEWAY_WAIT_MARGIN_SECONDS")
    )
    # The most a tools worker reads of one reply from an upstream MCP server (tenants' servers may
    # be hostile: an endless event or body would otherwise grow its memory without bound).
    mcp_max_reply_bytes: int = Field(4 * 1024 * 1024, ge=1024, validation_alias=_env("MCP_MAX_REPLY_BYTES"))
    mcp_breaker_threshold: int = Field(5, ge=1, validation_alias=_env("MCP_BREAKER_THRESHOLD"))
    mcp_breaker_reset_seconds: float = Field(30.0, gt=0, validation_alias=_env("MCP_BREAKER_RESET_SECONDS"))
    mcp_tools_cache_seconds: int = Field(300, ge=0, validation_alias=_env("MCP_TOOLS_CACHE_SECONDS"))
    # How long an ingress process trusts a gateway token it read from Redis (events/gateway_tokens.py):
    # the longest a revocation that never reached the process leaves the token usable there.
    mcp_gateway_token_cache_seconds: float = Field(
        1.0, ge=0, le=60, validation_alias=_env("MCP_GATEWAY_TOKEN_CACHE_SECONDS")
    )
    # Whether the gateway answers a well-formed MCP 2026-07-28 tools/call itself (api/mcp_fast_call.py)
    # rather than through fastmcp's app; off, every request takes fastmcp's path.
    mcp_gateway_fast_path: bool = Field(True, validation_alias=_env("MCP_GATEWAY_FAST_PATH"))
    # Whether an accepted message (POST .../message) is answered without Litestar's per-request
    # handler machinery (api/lean_message.py); off, every message takes the route's path.
    lean_message_path: bool = Field(True, validation_alias=_env("LEAN_MESSAGE_PATH"))
    # How long a tools worker keeps an unused upstream MCP session (and a stdio server) open.
    mcp_client_idle_seconds: float = Field(300.0, gt=0, validation_alias=_env("MCP_CLIENT_IDLE_SECONDS"))
    # OAuth connections to MCP servers: how long an authorization may take, how early tokens are
    # refreshed, and which frontend pages (URL prefixes) may receive the code instead of the callback.
    mcp_oauth_state_ttl_seconds: int = Field(
        600, ge=30, le=3600, validation_alias=_env("MCP_OAUTH_STATE_TTL_SECONDS")
    )
    mcp_oauth_refresh_margin_seconds: int = Field(
        300, ge=0, le=86400, validation_alias=_env("MCP_OAUTH_REFRESH_MARGIN_SECONDS")
    )
    mcp_oauth_redirect_allowlist: list[str] = Field(
        default_factory=list, validation_alias=_env("MCP_OAUTH_REDIRECT_ALLOWLIST")
    )
    # How agents reach the ingress (the MCP gateway URL handed to each session), and how published
    # coder/agentapi clients reach a session's root-path alias (the ``url`` of a client key).
    public_base_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("PUBLIC_BASE_URL"))
    # A session client key's lifetime: the default, and the most a request may ask for.
    client_key_ttl_seconds: int = Field(
        3600, ge=60, le=7 * 86400, validation_alias=_env("CLIENT_KEY_TTL_SECONDS")
    )

    # Requests a minute, counted in Redis across every ingress process.
    rate_limit_per_user: int = Field(600, ge=1, validation_alias=_env("RATE_LIMIT_PER_USER"))
    rate_limit_per_org: int = Field(6000, ge=1, validation_alias=_env("RATE_LIMIT_PER_ORG"))

    # Unauthenticated requests (no or a refused token, webhook deliveries) a minute per client address.
    rate_limit_per_address: int = Field(120, ge=1, validation_alias=_env("RATE_LIMIT_PER_ADDRESS"))
    # Proxies (addresses or networks, as JSON) whose X-Forwarded-For names the client; nobody else's is read.
    trusted_proxies: list[str] = Field(default_factory=list, validation_alias=_env("TRUSTED_PROXIES"))

    # Processes of `agentapi serve` (uvicorn workers on one port); `--workers` overrides it.
    serve_workers: int = Field(1, ge=1, le=64, validation_alias=_env("WORKERS"))

    max_request_body_bytes: int = Field(1_048_576, ge=1024, validation_alias=_env("MAX_REQUEST_BODY_BYTES"))
    # All request header names and values together; more is a 431 before anything reads them.
    max_header_bytes: int = Field(32_768, ge=4096, validation_alias=_env("MAX_HEADER_BYTES"))
    sse_heartbeat_seconds: float = Field(15.0, gt=0, validation_alias=_env("SSE_HEARTBEAT_SECONDS"))

    # When set, /metrics wants "Authorization: Bearer <token>"; otherwise keep it off the public network.
    metrics_token: SecretStr | None = Field(None, validation_alias=_env("METRICS_TOKEN"))
    sentry_dsn: SecretStr | None = Field(None, validation_alias=_env("SENTRY_DSN", "SENTRY_DSN"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )

    # uvicorn's line per request (at INFO): a quarter of the message path's rate under load, since
    # each line is formatted, redacted and handed to the writer thread; off where a proxy logs requests.
    access_log: bool = Field(True, validation_alias=_env("ACCESS_LOG"))

    # JSON lines for log shippers; `agentapi dev` switches to text for people.
    log_format: Literal["json", "text"] = Field("json", validation_alias=_env("LOG_FORMAT"))

    @field_validator("database_url", "migrations_database_url", "platform_database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        return async_database_url(value) if value else value

    @field_validator("workspace_store_url")
    @classmethod
    def _known_store(cls, value: str | None) -> str | None:
        if value and value.partition("://")[0] not in WORKSPACE_STORE_SCHEMES:
            raise ValueError(
                f"must be a URL with one of the schemes {', '.join(WORKSPACE_STORE_SCHEMES)} (got {value!r})"
            )
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _production_needs_postgres(self) -> Settings:
        if self.environment == "production" and self.is_sqlite:
            raise ValueError(
                "AGENTAPI_DATABASE_URL (or DATABASE_URL) must name PostgreSQL in production;"
                " SQLite is only for agentapi dev and tests"
            )
        return self

    @model_validator(mode="after")
    def _needs_a_verifier(self) -> Settings:
        if self.jwt_secret is None and self.effective_jwks_url is None:
            raise ValueError(
                "AGENTAPI_JWT_SECRET (or SUPABASE_JWT_SECRET) or AGENTAPI_JWKS_URL (or SUPABASE_URL) is required"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or network") from exc
        return value

    @model_validator(mode="after")
    def _strong_jwt_secret(self) -> Settings:
        # An empty secret verified tokens signed with an empty key; production wants 256 bits.
        if self.jwt_secret is not None:
            length = len(self.jwt_secret.get_secret_value().encode())
            if length == 0:
                raise ValueError("AGENTAPI_JWT_SECRET (or SUPABASE_JWT_SECRET) is set but empty")
            if self.environment == "production" and length < MIN_JWT_SECRET_BYTES:
                raise ValueError(
                    f"AGENTAPI_JWT_SECRET (or SUPABASE_JWT_SECRET) must be at least {MIN_JWT_SECRET_BYTES}"
                    " bytes in production (HS256 with a short secret can be brute-forced)"
                )
        return self

    @field_validator("encryption_keys")
    @classmethod
    def _valid_key_ring(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_key_ring(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _sandbox_off_only_in_development(self) -> Settings:
        if self.sandbox == "none" and self.environment != "development":
            raise ValueError(
                "AGENTAPI_SANDBOX=none is accepted only with AGENTAPI_ENVIRONMENT=development:"
                " every tenant process runs sandboxed otherwise"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_keys(self) -> Settings:
        if self.environment == "production" and self.encryption_keys is None:
            raise ValueError(
                "AGENTAPI_ENCRYPTION_KEYS is required in production (generate one with: agentapi keys generate)"
            )
        return self

    @model_validator(mode="after")
    def _snapshots_need_keys(self) -> Settings:
        if self.workspace_store_url and self.encryption_keys is None:
            raise ValueError(
                "AGENTAPI_WORKSPACE_STORE_URL needs AGENTAPI_ENCRYPTION_KEYS: snapshots are encrypted"
            )
        return self

    def key_ring(self) -> KeyRing:
        """The key ring; KeyRingError when none is configured."""
        if self.encryption_keys is None:
            raise KeyRingError("AGENTAPI_ENCRYPTION_KEYS is not set: this deployment cannot store secrets")
        return _parse_key_ring(self.encryption_keys.get_secret_value())

    def workspace_of(self, org_id: object, user_id: object, session_id: object) -> Path:
        """A session's workspace, ``WORKSPACE_ROOT/{org}/{user}/{session}``, as an absolute path."""
        return (self.workspace_root / str(org_id) / str(user_id) / str(session_id)).absolute()

    def transport_of(self, agent_type: str) -> Transport:
        """``acp`` or ``pty``: agent types without an ACP adapter always run in the PTY."""
        transport: Transport = getattr(self, f"{agent_type}_transport", "pty")
        return transport

    def private_of(self, session_id: object) -> Path:
        """Where a session's helper processes keep what its agent must not read (router config):
        ``WORKSPACE_ROOT/.private/{session}``, outside every agent's mounts."""
        return (self.workspace_root / ".private" / str(session_id)).absolute()

    def gateway_url(self, session_id: object) -> str:
        """Where a session's agent reaches its MCP gateway on the ingress."""
        return f"{self.public_base_url.rstrip('/')}{GATEWAY_PATH}/{session_id}"

    def client_key_url(self, key: str) -> str:
        """The base URL a published coder/agentapi client is given: the public URL with the key as
        its userinfo, which httpx and most HTTP clients send as ``Authorization: Basic``."""
        parts = urlsplit(self.public_base_url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, f"{key}@{host}", parts.path.rstrip("/"), "", ""))

    def oauth_callback_url(self) -> str:
        """The redirect URI authorization servers send users back to when the frontend names none."""
        return f"{self.public_base_url.rstrip('/')}{OAUTH_CALLBACK_PATH}"

    @property
    def effective_jwks_url(self) -> str | None:
        if self.jwks_url:
            return self.jwks_url
        if self.supabase_url:
            return self.supabase_url.rstrip("/") + "/auth/v1/.well-known/jwks.json"
        return None

    @property
    def owner_database_url(self) -> str:
        return self.migrations_database_url or self.database_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _field_env_name(loc: tuple[int | str, ...]) -> str:
    """The environment names of the setting an error is about (errors are located by alias)."""
    if not loc:
        return "settings"
    for name, field in Settings.model_fields.items():
        choices = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else []
        if loc[0] == name or loc[0] in choices:
            return " / ".join(str(choice) for choice in choices)
    return str(loc[0])


def load_settings(**overrides: object) -> Settings:
    """Load settings or exit with one clear line per missing or invalid setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # overrides are checked by pydantic, field by field
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            where = _field_env_name(error["loc"])
            prefix = (
                "agentapi: invalid settings" if where == "settings" else f"agentapi: invalid setting {where}"
            )
            print(f"{prefix}: {message}", file=sys.stderr)
        raise SystemExit(2) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
