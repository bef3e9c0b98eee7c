"""A batch's pipeline sent by one write on a connection of its client's pool, its replies read by
one ``hiredis.Reader``: what ``Pipeline.execute(raise_on_error=False)`` answers, for less CPU.

redis-py reads each reply of a pipeline through ``Connection.read_response`` (a coroutine, a
host-error string, a timeout branch, the parser's checks) and ``parse_response``: ~40 µs a message
of three commands in the ingress, where one reader over the same replies took ~7 µs (bench/README.md,
ingress rounds 6 and 7). Everything else stays redis-py's: the pool's checkout (its wait, its
reconnect of a connection found closed), the connection's handshake (AUTH, HELLO, the database,
TLS, Unix sockets), the write (``send_packed_command``, its error mapping), the error classes
(redis-py's error parser), the client's response callbacks, errors in place, and the disconnect of
a connection left with replies unread (a failure or the batch's deadline mid-read).

Left to ``Pipeline.execute``: transactions, WATCH, redis-py ``Script`` objects, a client with
HIMPORT fieldsets (redis-py folds their PREPAREs into the write), connections that do not parse
with hiredis (their parser could shape a reply differently) and connections that retry (redis-py
sends the pipeline again after a connection error; the batch's clients, ``batch_redis``, do not).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import hiredis
from redis._parsers import BaseParser
from redis._parsers.hiredis import _AsyncHiredisParser
from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection, DefaultParser
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from events.connection import address, timed_out
from events.packing import pack_commands

# How long past a blocking command's own time (XREAD's BLOCK) its pipeline's replies may take before
# the connection counts as lost: the clients' socket timeout, which ``execute`` does not apply.
BLOCK_MARGIN_SECONDS = 5.0
# As redis-py's connections read: 64 KB a read.
READ_SIZE = 65536
_MORE = object()  # hiredis's "not enough data yet": False and None are replies
_PUSH = getattr(hiredis, "PushNotification", ())


async def execute(pipe: Pipeline) -> list[Any]:
    """The replies to ``pipe``'s commands in order, a command Redis refused as its exception."""
    return await _execute(pipe, None)


async def execute_within(pipe: Pipeline, deadline: float) -> list[Any]:
    """``execute`` bounded by ``deadline`` seconds as a whole (its reads have no socket timeout):
    past it redis-py's ``TimeoutError``, the connection disconnected mid-read. Replies that were
    late (not a wait for a free connection) count as a read that timed out: the process's other
    connections to that Redis are opened afresh (``events.connection.FreshAfterTimeout``)."""
    try:
        return await _execute(pipe, asyncio.get_running_loop().time() + deadline)
    except TimeoutError:
        raise RedisTimeoutError(f"no reply from Redis within {deadline:g} s") from None


async def _execute(pipe: Pipeline, until: float | None) -> list[Any]:
    stack = pipe.command_stack
    if not stack:
        return []
    pool = pipe.connection_pool
    reading = False
    try:
        async with asyncio.timeout_at(until):
            if not _ours(pipe):
                return await pipe.execute(raise_on_error=False)
            connection = await pool.get_connection()
            if connection.retry.get_retries():  # redis-py sends such a client's pipeline again on a failure
                await pool.release(connection)
                return await pipe.execute(raise_on_error=False)
            try:
                reading = True
                await connection.send_packed_command(
                    pack_commands((args for args, _ in stack), connection.encoder)
                )
                replies = await _replies(pipe, connection)
                reading = False
                return replies
            finally:
                await pool.release(connection)
    except TimeoutError:
        if reading:
            timed_out(address(pool.connection_kwargs))
        raise


async def execute_blocking(pipe: Pipeline, block_ms: int) -> list[Any]:
    """The replies of ``pipe``, whose last command blocks up to ``block_ms`` (XREAD's BLOCK), read
    by one hiredis reader as ``execute`` reads them: the first error is raised, as
    ``Pipeline.execute`` does, and ``BLOCK_MARGIN_SECONDS`` past the block the connection counts as
    lost (the socket timeout, which ``execute`` does not apply)."""
    replies = await execute_within(pipe, block_ms / 1000 + BLOCK_MARGIN_SECONDS)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _ours(pipe: Pipeline) -> bool:
    pool = pipe.connection_pool
    return (
        not (pipe.is_transaction or pipe.explicit_transaction or pipe.watching or pipe.scripts)
        and pool.himport_registry.revision == 0
        and pool.connection_kwargs.get("parser_class", DefaultParser) is _AsyncHiredisParser
    )


async def _replies(pipe: Pipeline, connection: AbstractConnection) -> list[Any]:
    encoder = connection.encoder
    options: dict[str, Any] = {
        "protocolError": InvalidResponse,
        "replyError": BaseParser.parse_error,
        "notEnoughData": _MORE,
    }
    if encoder.decode_responses:
        options.update(encoding=encoder.encoding, errors=encoder.encoding_errors)
    reader = hiredis.Reader(**options)
    stream: Any = connection._reader  # the connection's StreamReader: its parser reads the same
    callbacks: Any = pipe.response_callbacks
    found: dict[Any, Any] = {}  # each name's callback: the client's mapping upper-cases per look-up
    replies: list[Any] = []
    try:
        for args, kwargs in pipe.command_stack:
            decode = NEVER_DECODE not in kwargs
            reply = reader.gets(decode)
            while reply is _MORE or isinstance(reply, _PUSH):  # pushes: nothing the batch asked for
                if reply is _MORE:
                    data = await stream.read(READ_SIZE)
                    if not data:
                        raise RedisConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
                    reader.feed(data)
                reply = reader.gets(decode)
            if isinstance(reply, ResponseError):
                replies.append(kwargs.get(EMPTY_RESPONSE, reply))
                continue
            _raise_connection_error(reply)
            name = args[0]
            if name not in found:
                found[name] = callbacks.get(name)
            callback = found[name]
            if callback is not None:
                reply = callback(
                    reply, **{key: kwargs[key] for key in kwargs if key not in _NOT_FOR_CALLBACKS}
                )
                if type(reply) not in _PLAIN and inspect.isawaitable(reply):
                    reply = await reply
            replies.append(reply)
    except OSError as exc:
        await connection.disconnect(nowait=True)
        raise RedisConnectionError(
            f"Error while reading from {connection._host_error()} : {exc.args}"
        ) from exc
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    if connection.health_check_interval:  # as read_response: the connection was just heard from
        connection.next_health_check = asyncio.get_running_loop().time() + connection.health_check_interval
    return replies


def _raise_connection_error(reply: Any) -> None:
    """As redis-py's parser: an error reply that is the connection's (``max number of clients
    reached``, ``LOADING``, ``NOAUTH``) ends the pipeline, and the connection with it."""
    if isinstance(reply, RedisConnectionError):
        raise reply
    if type(reply) is list and reply and isinstance(reply[0], RedisConnectionError):
        raise reply[0]


# Options ``Pipeline.parse_response`` takes for itself; the rest go to the command's callback.
_NOT_FOR_CALLBACKS = frozenset((NEVER_DECODE, EMPTY_RESPONSE, "keys"))
# Answers that are no awaitable: ``inspect.isawaitable`` (an ABC check) is not needed for them.
_PLAIN = frozenset((bytes, str, int, float, bool, list, dict, tuple, type(None)))
