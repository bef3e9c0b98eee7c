"""Between an ACP agent's permission requests and whoever decides them: the org's policy, or the API
client through ``POST /api/v1/sessions/{id}/permissions/{request_id}``.

A request the policy leaves to a person becomes a ``permission.requested`` event with a request id
and the agent's options; the open request is kept in Redis (its option ids, until it expires) so
the ingress can check an answer and take it once; the answer comes back on the session's input
stream. Unanswered requests are cancelled when they expire or the turn is cancelled. Every decision
— by policy, person or expiry — is a ``permission.decided`` event and an audit record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from events.envelope import EventType, new_event_id
from events.streams import Names
from schemas.agent_permissions import PermissionPolicy

Emit = Callable[[EventType, dict[str, Any]], Awaitable[None]]
Audit = Callable[..., Awaitable[None]]
# Option kinds ACP defines, in the order a policy's allow or deny picks from.
ALLOW_KINDS = ("allow_once", "allow_always")
REJECT_KINDS = ("reject_once", "reject_always")


class PermissionDesk:
    def __init__(
        self,
        *,
        redis: Redis,
        names: Names,
        session_id: str,
        workspace: Path,
        policy: PermissionPolicy,
        timeout: float,
        emit: Emit,
        audit: Audit,
    ) -> None:
        self.redis = redis
        self.names = names
        self.session_id = session_id
        self.workspace = workspace
        self.policy = policy
        self.timeout = timeout
        self.emit = emit
        self.audit = audit
        self._open: dict[str, asyncio.Future[tuple[str, str]]] = {}

    async def ask(self, tool_call: dict[str, Any], options: list[dict[str, Any]]) -> str | None:
        """The option id the agent should take, or None (cancelled)."""
        locations = [str(place.get("path", "")) for place in tool_call.get("locations") or []]
        decision = self.policy.decide(tool_call.get("kind"), locations, self.workspace)
        request_id = new_event_id()
        if decision != "ask":
            chosen = _pick(options, ALLOW_KINDS if decision == "allow" else REJECT_KINDS)
            await self._decided(request_id, tool_call, chosen, by="policy", actor=None)
            return chosen
        key = self.names.permission_request(self.session_id, request_id)
        expires = datetime.now(UTC) + timedelta(seconds=self.timeout)
        opened = {
            "options": [option["option_id"] for option in options],
            "tool_call_id": tool_call.get("tool_call_id"),
        }
        answer: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._open[request_id] = answer
        try:
            await self.redis.set(key, json.dumps(opened), ex=max(1, round(self.timeout)))
            await self.emit(
                EventType.PERMISSION_REQUESTED,
                {
                    "request_id": request_id,
                    "tool_call": tool_call,
                    "options": options,
                    "expires_at": expires.isoformat(),
                    "answer_url": f"/api/v1/sessions/{self.session_id}/permissions/{request_id}",
                },
            )
            try:
                chosen, actor = await asyncio.wait_for(asyncio.shield(answer), self.timeout)
            except TimeoutError:
                await self._decided(request_id, tool_call, None, by="expiry", actor=None)
                return None
            except asyncio.CancelledError:
                # The turn was cancelled: the agent is told "cancelled", as ACP asks of a client.
                await asyncio.shield(self._decided(request_id, tool_call, None, by="cancel", actor=None))
                raise
            await self._decided(request_id, tool_call, chosen, by="user", actor=actor)
            return chosen
        finally:
            self._open.pop(request_id, None)
            await asyncio.shield(self.redis.delete(key))

    def answer(self, request_id: str, option_id: str, actor: str) -> None:
        """An answer the ingress checked and took; one for a request no longer open is dropped."""
        waiting = self._open.get(request_id)
        if waiting is not None and not waiting.done():
            waiting.set_result((option_id, actor))

    async def _decided(
        self, request_id: str, tool_call: dict[str, Any], chosen: str | None, *, by: str, actor: str | None
    ) -> None:
        payload = {
            "request_id": request_id,
            "tool_call_id": tool_call.get("tool_call_id"),
            "title": tool_call.get("title"),
            "kind": tool_call.get("kind"),
            "option_id": chosen,
            "outcome": "selected" if chosen else "cancelled",
            "decided_by": by,
            "actor_user_id": actor,
        }
        await self.emit(EventType.PERMISSION_DECIDED, payload)
        await self.audit(
            "session.permission",
            "success" if chosen else "denied",
            **{k: v for k, v in payload.items() if v is not None and k != "outcome"},
        )


def _pick(options: list[dict[str, Any]], kinds: tuple[str, ...]) -> str | None:
    for kind in kinds:
        for option in options:
            if option.get("kind") == kind:
                return str(option["option_id"])
    return None
