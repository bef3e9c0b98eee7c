"""A worker's results (workers/context.py ``WorkerContext.emit``) over real Redis: results that
finish in one loop turn go to Redis together, and each caller still gets its own answer, log entry
and webhook notice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from events import replies
from events.envelope import Event, EventType
from events.payloads import WebhookNotice
from events.results import read_log
from events.streams import FIELD, Names, WorkKind
from schemas.settings import Settings
from workers.context import WorkerContext

CALLS = 20


async def monitored(aredis: Redis, prefix: str, seen: list[list[Any]], ready: asyncio.Event) -> None:
    """Every command Redis runs on a key of ``prefix`` (MONITOR), until cancelled."""
    async with aredis.monitor() as monitor:
        ready.set()
        while True:
            command = await monitor.next_command()
            words = str(command["command"]).split()
            if len(words) > 1 and words[1].startswith(prefix):
                seen.append(words)


async def test_results_of_one_loop_turn_share_round_trips_and_keep_their_own_answers(
    redis_url: str, redis_prefix: str, names: Names, aredis: Redis
) -> None:
    settings = Settings(
        _env_file=None,
        environment="test",
        jwt_secret="x" * 32,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
    )
    context = WorkerContext(settings)
    org, user, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    requests = [f"request-{n}" for n in range(CALLS)]
    answers = [
        Event(
            type=EventType.TOOL_CALL_COMPLETED,
            org_id=org,
            user_id=user,
            session_id=session,
            payload={"n": n},
        )
        for n in range(CALLS)
    ]

    def then(pipe: Pipeline) -> None:
        pipe.incr(f"{redis_prefix}then")

    seen: list[list[Any]] = []
    ready = asyncio.Event()
    watching = asyncio.create_task(monitored(aredis, redis_prefix, seen, ready))
    try:
        await ready.wait()
        stream_ids = await asyncio.gather(
            *(
                context.emit(answer, reply_to=request, then=then)
                for answer, request in zip(answers, requests, strict=True)
            )
        )
        await asyncio.sleep(0.5)  # MONITOR's lines trail the replies
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

    # Each caller: its reply, its log entry (the id it was given), its webhook notice with that id.
    for answer, request in zip(answers, requests, strict=True):
        ((_, fields),) = replies.entries(await aredis.xrange(names.reply(request)))
        assert Event.from_wire(fields[FIELD]).id == answer.id
    logged = {Event.from_wire(wire).id: entry_id for entry_id, wire in await read_log(aredis, names, session)}
    assert logged == {answer.id: stream_id for answer, stream_id in zip(answers, stream_ids, strict=True)}
    work = replies.entries(await aredis.xrange(names.work(WorkKind.DEFAULT)))
    notices = [Event.from_wire(f[FIELD]) for _, f in work]
    by_event = {Event.from_wire(WebhookNotice.of(n).event).id: WebhookNotice.of(n).stream_id for n in notices}
    assert by_event == logged
    assert await aredis.get(f"{redis_prefix}then") == str(CALLS)

    # Together: the published-events count summed into one increment per pipeline, not one per call.
    counted = [
        words
        for words in seen
        if words[0].strip('"').upper() == "HINCRBY" and "events_published" in " ".join(words)
    ]
    assert 1 <= len(counted) <= 4, counted
