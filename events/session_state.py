"""The session's live state hash in Redis, written by its host and by the ingress.

Turns are claimed atomically: the ingress moves the hash from ``stable`` to ``running`` and queues
the user message in one script, marking the turn ``claimed``; the host clears the mark once the
agent has taken the message. While a turn is claimed, the host never writes ``stable`` (a late
``stable`` from before the message, or a screen that settled for a moment, would otherwise let a
client read ``stable`` right after its message was accepted, or start a second turn).
"""

from __future__ import annotations

from uuid import UUID

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from events.payloads import SessionInput, UserMessage, input_fields
from events.streams import Names

CLAIMED = "claimed"

_START_TURN = """
if redis.call('HGET', KEYS[1], 'status') ~= 'stable' then
  return false
end
redis.call('HSET', KEYS[1], 'status', 'running', 'detail', 'thinking', 'claimed', '1')
return redis.call('XADD', KEYS[2], '*', unpack(ARGV))
"""

# ARGV: status, agent_type, transport, ttl seconds, detail ('' for none: the ingress tells it by status).
_SET_STATUS = """
if ARGV[1] == 'stable' and redis.call('HEXISTS', KEYS[1], 'claimed') == 1 then
  redis.call('HSET', KEYS[1], 'agent_type', ARGV[2], 'transport', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'agent_type', ARGV[2], 'transport', ARGV[3])
  if ARGV[5] == '' then
    redis.call('HDEL', KEYS[1], 'detail')
  else
    redis.call('HSET', KEYS[1], 'detail', ARGV[5])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


# KEYS: the prompt's mark, the state hash, the input stream. ARGV: the mark's ttl, then the fields.
_QUEUE_PROMPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return false
end
redis.call('HSET', KEYS[2], 'claimed', '1')
return redis.call('XADD', KEYS[3], '*', unpack(ARGV, 2))
"""


async def start_turn(redis: Redis, names: Names, session_id: UUID | str, content: str) -> bool:
    """Queue ``content`` as the next user message if the agent is stable; False if it is not."""
    keys = [names.session_state(session_id), names.session_input(session_id)]
    fields = input_fields(UserMessage(content=content))
    return bool(
        await redis.register_script(_START_TURN)(keys, [item for pair in fields.items() for item in pair])
    )


async def queue_input(redis: Redis, names: Names, session_id: UUID | str, item: SessionInput) -> None:
    """Append ``item`` to the session's input stream, for its host to take in order."""
    await redis.xadd(*input_entry(names, session_id, item))


def input_entry(
    names: Names, session_id: UUID | str, item: SessionInput
) -> tuple[str, dict[FieldT, EncodableT]]:
    """The stream and fields of ``item``'s entry in the session's input stream (for a pipeline)."""
    return names.session_input(session_id), {key: value for key, value in input_fields(item).items()}


async def set_status(
    redis: Redis,
    names: Names,
    session_id: UUID | str,
    status: str,
    agent_type: str,
    transport: str,
    ttl: int,
    detail: str = "",
) -> None:
    """The host's status write; ``stable`` waits while a turn is claimed but not yet taken."""
    keys = [names.session_state(session_id)]
    await redis.register_script(_SET_STATUS)(keys, [status, agent_type, transport, ttl, detail])


async def set_detail(redis: Redis, names: Names, session_id: UUID | str, detail: str) -> None:
    """The host's detail alone (``error`` while the agent shows a failure; '' removes it)."""
    key = names.session_state(session_id)
    if detail:
        await redis.hset(key, "detail", detail)
    else:
        await redis.hdel(key, "detail")


async def queue_prompt(redis: Redis, names: Names, session_id: UUID | str, content: str, ttl: int) -> bool:
    """Queue the session's first prompt with its turn claimed, unless a host already did (False).

    Hosting is redelivered when a host fails, and one that failed after its session was marked
    started is followed by a recovery: the mark, kept ``ttl`` seconds with the input stream, lets
    whichever host comes after a failure queue the prompt, once."""
    keys = [
        names.session_prompt(session_id),
        names.session_state(session_id),
        names.session_input(session_id),
    ]
    fields = input_fields(UserMessage(content=content))
    args: list[EncodableT] = [ttl, *(item for pair in fields.items() for item in pair)]
    return bool(await redis.register_script(_QUEUE_PROMPT)(keys, args))


async def turn_taken(redis: Redis, names: Names, session_id: UUID | str) -> None:
    await redis.hdel(names.session_state(session_id), CLAIMED)
