"""Every Redis stream, channel and key name the platform uses, in one place."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from uuid import UUID

from events.envelope import EventType

# The single field of a stream entry; its value is the JSON envelope.
FIELD = "e"
# The consumer group that moves work-stream events onto Dramatiq queues.
DISPATCH_GROUP = "dispatchers"


class WorkKind(StrEnum):
    """Work streams, one per worker pool; each maps to the Dramatiq queue of the same name."""

    SESSIONS = "sessions"
    TOOLS = "tools"
    AUDIT = "audit"
    DEFAULT = "default"


# Which work stream an event type is published to. Types not listed are results only: they go to
# a session's event log and channel, never to a worker pool.
WORK_ROUTES: dict[EventType, WorkKind] = {
    EventType.SESSION_REQUESTED: WorkKind.SESSIONS,
    EventType.TOOL_CALL_REQUESTED: WorkKind.TOOLS,
    EventType.MCP_TEST_REQUESTED: WorkKind.TOOLS,
    EventType.AUDIT_RECORDED: WorkKind.AUDIT,
    EventType.WEBHOOK_RECEIVED: WorkKind.DEFAULT,
    EventType.WEBHOOK_NOTIFY_REQUESTED: WorkKind.DEFAULT,
    EventType.USER_ERASED: WorkKind.DEFAULT,
    EventType.MCP_OAUTH_REFRESH_REQUESTED: WorkKind.DEFAULT,
}


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream id ("<ms>-<seq>") as something that orders like Redis orders ids."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def secret_digest(secret: str) -> str:
    """What a bearer secret (gateway token, client key) is stored under: its SHA-256, never itself."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Names:
    """Key names under one prefix (``REDIS_PREFIX``), so deployments and tests can share a Redis."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def work(self, kind: WorkKind) -> str:
        return f"{self.prefix}work:{kind.value}"

    def dead_letter(self) -> str:
        return f"{self.prefix}dead"

    def session_input(self, session_id: UUID | str) -> str:
        return f"{self.prefix}session:{session_id}:input"

    def session_log(self, session_id: UUID | str) -> str:
        return f"{self.prefix}session:{session_id}:log"

    def session_channel(self, session_id: UUID | str) -> str:
        return f"{self.prefix}session:{session_id}:notify"

    def session_of_channel(self, channel: str) -> str:
        """The session id a ``session_channel`` name is for."""
        return channel.removeprefix(f"{self.prefix}session:").removesuffix(":notify")

    def session_upload(self, session_id: UUID | str, upload_id: str) -> str:
        """An uploaded file (base64) waiting for the session's host to place it in the workspace."""
        return f"{self.prefix}session:{session_id}:upload:{upload_id}"

    def webhook_delivery_seen(self, webhook_id: UUID | str, delivery_id: str) -> str:
        """Set for 24 h once an inbound delivery id was accepted, so a replay is refused."""
        return f"{self.prefix}webhook:{webhook_id}:delivery:{delivery_id}"

    def session_state(self, session_id: UUID | str) -> str:
        """Hash kept by the session's host: status, agent_type, host, heartbeat (expires with the host)."""
        return f"{self.prefix}session:{session_id}:state"

    def permission_request(self, session_id: UUID | str, request_id: str) -> str:
        """An ACP agent's open permission request (its option ids, JSON) until answered or expired."""
        return f"{self.prefix}session:{session_id}:permission:{request_id}"

    def acp_session(self, session_id: UUID | str) -> str:
        """The ACP agent's own session id, so a recovering host can ``session/load`` it."""
        return f"{self.prefix}session:{session_id}:acp-session"

    def session_prompt(self, session_id: UUID | str) -> str:
        """Set once the session's first prompt is on its input stream, so no host queues it twice."""
        return f"{self.prefix}session:{session_id}:prompt-queued"

    def session_screen(self, session_id: UUID | str) -> str:
        """The agent's rendered screen as text, kept by its host (expires with the host)."""
        return f"{self.prefix}session:{session_id}:screen"

    def dramatiq_namespace(self) -> str:
        return f"{self.prefix}dramatiq"

    def dramatiq_queue(self, queue: str) -> str:
        """The Redis broker's list of messages ready on ``queue``."""
        return f"{self.dramatiq_namespace()}:{queue}"

    def dramatiq_unacked(self, queue: str) -> str:
        """The Redis broker's hash of every message on ``queue`` not yet acknowledged: waiting,
        prefetched or running. Dramatiq's own layout, not its API (tests/test_dramatiq_internals.py)."""
        return f"{self.dramatiq_queue(queue)}.msgs"

    def dramatiq_delayed(self, queue: str) -> str:
        """The Redis broker's hash of messages waiting for a retry's back-off on ``queue``."""
        return self.dramatiq_unacked(f"{queue}.DQ")

    def dramatiq_wake(self, queue: str) -> str:
        """Wake-up tokens for ``queue``'s idle consumers, pushed at every enqueue (workers.broker)."""
        return f"{self.dramatiq_queue(queue)}.wake"

    def metrics(self) -> str:
        """Hash of the cluster-wide counters and histograms (see events.metrics)."""
        return f"{self.prefix}metrics"

    def active_sessions(self) -> str:
        """Sorted set of hosted sessions (``agent_type:session_id``), scored by heartbeat expiry."""
        return f"{self.prefix}sessions:active"

    def session_hosts(self) -> str:
        """Hash of sessions workers' advertisements (worker id → slots, sessions, expiry), see workers.placement."""
        return f"{self.prefix}sessions:hosts"

    def stream_label(self, key: str) -> str:
        """A stream's metric label: its key without the deployment prefix."""
        return key.removeprefix(self.prefix)

    def processed(self, event_id: str) -> str:
        """Marks an event whose effect is durable, for idempotent handlers."""
        return f"{self.prefix}done:{event_id}"

    def sink_drain_lock(self, sink_id: UUID | str, session_id: UUID | str) -> str:
        """Held while one worker publishes a session's events to a sink, so they go out in order."""
        return f"{self.prefix}sink:{sink_id}:{session_id}:lock"

    def sink_drain_queued(self, sink_id: UUID | str, session_id: UUID | str) -> str:
        """Set while a drain of the pair waits on a queue: further notices need not enqueue another."""
        return f"{self.prefix}sink:{sink_id}:{session_id}:queued"

    def sink_drain_again(self, sink_id: UUID | str, session_id: UUID | str) -> str:
        """Set when a drain found the lock held: the holder drains once more before it lets go."""
        return f"{self.prefix}sink:{sink_id}:{session_id}:again"

    def claim(self, event_id: str) -> str:
        """A short lease held while a handler works on an event, so duplicates wait."""
        return f"{self.prefix}claim:{event_id}"

    def reply(self, request_id: str) -> str:
        """A short-lived stream carrying the answer to one request the ingress waits for."""
        return f"{self.prefix}reply:{request_id}"

    def mcp_tools(self, config_id: UUID | str) -> str:
        """Cached tool list of one MCP configuration (JSON), refreshed by the tools workers."""
        return f"{self.prefix}mcp:{config_id}:tools"

    def breaker(self, config_id: UUID | str) -> str:
        """Circuit-breaker hash of one MCP server, shared by every tools worker."""
        return f"{self.prefix}mcp:{config_id}:breaker"

    def breaker_changes(self) -> str:
        """The channel on which a configuration id is published when its breaker's state grows
        (workers/circuit_breaker.py)."""
        return f"{self.prefix}mcp:breaker-changes"

    def mcp_config_changes(self) -> str:
        """The channel on which a configuration id is published when it, or a grant for it, changed
        (services/mcp/changes.py), so tools workers forget what they loaded of it."""
        return f"{self.prefix}mcp:config-changes"

    def rate_limit_user(self, user_id: UUID | str) -> str:
        """The GCRA state (theoretical arrival time) of one user's request budget."""
        return f"{self.prefix}rl:user:{user_id}"

    def rate_limit_org(self, org_id: UUID | str) -> str:
        return f"{self.prefix}rl:org:{org_id}"

    def rate_limit_address(self, address: str) -> str:
        """The request budget of one client address, before any authentication."""
        return f"{self.prefix}rl:addr:{address}"

    def audit_refused(self, org_id: UUID | str, resource_id: str | None) -> str:
        """Set while a window's first refused public request for a resource is on the audit trail."""
        return f"{self.prefix}audit:refused:{org_id}:{resource_id}"

    def console_login(self, code: str) -> str:
        """A one-time console sign-in (the token it stands for), written by ``agentapi dev``."""
        return f"{self.prefix}console:login:{code}"

    def oauth_state(self, state: str) -> str:
        """A pending MCP authorization (JSON), by its ``state`` parameter; single use, short-lived."""
        return f"{self.prefix}oauth:state:{state}"

    def oauth_state_used(self, state: str) -> str:
        """Who a consumed ``state`` belonged to, kept a while so a replay is named and audited."""
        return f"{self.prefix}oauth:used:{state}"

    def oauth_refresh_lock(self, grant_id: UUID | str) -> str:
        """Held while one worker refreshes a grant, so a rotating refresh token is spent once."""
        return f"{self.prefix}oauth:refresh:{grant_id}"

    def gateway_token(self, token_hash: str) -> str:
        """A session's MCP gateway token (by its SHA-256), valid while the session's host lives."""
        return f"{self.prefix}gateway:{token_hash}"

    def gateway_revocations(self) -> str:
        """The channel on which a revoked gateway token's SHA-256 is published (events/gateway_tokens.py)."""
        return f"{self.prefix}gateway:revoked"

    def client_key(self, key_hash: str) -> str:
        """A session client key's grant (JSON), by the key's SHA-256; expires with the key."""
        return f"{self.prefix}clientkey:{key_hash}"

    def session_client_keys(self, session_id: UUID | str) -> str:
        """The hashes of a session's client keys (a set), so that they can all be revoked."""
        return f"{self.prefix}session:{session_id}:clientkeys"
