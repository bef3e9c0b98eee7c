"""The ``sessions`` pool.

Walking-skeleton host: it runs a real, trivial subprocess in the session's workspace and reports
its output as the agent's message. The PTY host (agent CLI in a pseudo-terminal) replaces the body
of ``run_session``; its events and their order stay the same.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import dramatiq
from sqlmodel import update

from events.envelope import Event, EventType
from schemas.db import TenantContext, tenant_transaction
from schemas.tables import UserSession
from workers.context import WorkerContext, current

SKELETON_TIMEOUT_SECONDS = 30


def workspace_for(context: WorkerContext, event: Event) -> Path:
    path = context.settings.workspace_root / str(event.org_id) / str(event.user_id) / str(event.session_id)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


async def set_status(context: WorkerContext, event: Event, status: str, **values: object) -> None:
    ctx = TenantContext(org_id=event.org_id, user_id=event.user_id, role="owner")
    async with tenant_transaction(context.engine, ctx) as db:
        await db.exec(
            update(UserSession)
            .where(UserSession.id == event.session_id, UserSession.org_id == event.org_id)
            .values(status=status, updated_at=datetime.now(UTC), **values)
        )


@dramatiq.actor(queue_name="sessions", actor_name="run_session", max_retries=3, time_limit=120_000)
async def run_session(envelope: str) -> None:
    context = current()
    event = Event.from_wire(envelope)
    workspace = workspace_for(context, event)
    await set_status(context, event, "running", started_at=datetime.now(UTC), workspace_path=str(workspace))
    await context.emit(event.follow_up(EventType.SESSION_STARTED, {"worker": context.worker_id}))
    proc = await asyncio.create_subprocess_exec(
        "/bin/echo",
        "-n",
        event.payload.get("prompt") or "",
        cwd=workspace,
        env={"PATH": os.defpath, "HOME": str(workspace)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), SKELETON_TIMEOUT_SECONDS)
    message = {"id": 0, "role": "agent", "content": stdout.decode(errors="replace").strip()}
    await context.emit(event.follow_up(EventType.MESSAGE_COMPLETED, message))
    await set_status(context, event, "ended", ended_at=datetime.now(UTC), end_reason="completed")
    await context.emit(event.follow_up(EventType.SESSION_ENDED, {"reason": "completed"}))


@dramatiq.actor(queue_name="sessions", actor_name="stop_session", max_retries=3, time_limit=30_000)
async def stop_session(envelope: str) -> None:
    context = current()
    event = Event.from_wire(envelope)
    await set_status(context, event, "ended", ended_at=datetime.now(UTC), end_reason="stopped")
    await context.emit(event.follow_up(EventType.SESSION_ENDED, {"reason": "stopped"}))
