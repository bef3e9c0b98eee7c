"""A tenant's stdio MCP server, which may be hostile, spoken to over its pipes with each line read
up to a byte limit (``AGENTAPI_MCP_MAX_REPLY_BYTES``, as for HTTP replies).

fastmcp's ``StdioTransport`` runs the MCP SDK's stdio client, which gathers a line until its newline
however long it grows: a server printing without one grew the worker's memory without bound, and the
call waited for its timeout. Past the limit, this transport ends the server's process and its
session (the waiting calls fail at once) and remembers why (``oversized``), as ``FastmcpHttp`` does
for HTTP."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import anyio
import mcp_types
from anyio.abc import ObjectReceiveStream, ObjectSendStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream
from fastmcp.client.transports.base import ClientTransport, SessionKwargs, TransportOptions
from mcp import ClientSession
from mcp.client.stdio import get_default_environment
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage
from typing_extensions import Unpack

from workers.mcp_http import ReplyTooLarge

# The SDK's shutdown: the server gets this long to exit after its stdin closes, then SIGTERM to its
# process group, then as long again before SIGKILL.
EXIT_GRACE_SECONDS = 2.0


class BoundedStdio(ClientTransport):
    """A stdio server run in a process group of its own, its lines read up to ``limit`` bytes."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None, limit: int) -> None:
        self.argv, self.env, self.cwd, self.limit = argv, env, cwd, limit
        self.oversized: str | None = None

    @contextlib.asynccontextmanager
    async def connect_session(
        self, *, transport_options: TransportOptions | None = None, **session_kwargs: Unpack[SessionKwargs]
    ) -> AsyncGenerator[ClientSession, None]:
        options = transport_options or TransportOptions()
        async with self._pipes() as (read, write):
            async with options.session_class(read, write, **session_kwargs) as session:
                yield session

    @contextlib.asynccontextmanager
    async def _pipes(
        self,
    ) -> AsyncIterator[
        tuple[ObjectReceiveStream[SessionMessage | Exception], ObjectSendStream[SessionMessage]]
    ]:
        process = await anyio.open_process(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # A server's stderr can echo its inputs; it stays out of the platform's logs.
            stderr=subprocess.DEVNULL,
            cwd=self.cwd,
            env=get_default_environment() | self.env,
            start_new_session=True,
        )
        lines_in, read = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write, lines_out = anyio.create_memory_object_stream[SessionMessage](0)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._read, process, lines_in)
            tasks.start_soon(_write, process, lines_out)
            try:
                yield read, write
            finally:
                # Shielded: a cancelled caller must not leave the server running.
                with anyio.CancelScope(shield=True):
                    await _stop(process)
                tasks.cancel_scope.cancel()

    async def _read(self, process: Process, lines: ObjectSendStream[SessionMessage | Exception]) -> None:
        assert process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        async with lines:
            try:
                while True:
                    line = await stdout.receive_until(b"\n", self.limit)
                    await lines.send(_parse(line))
            except anyio.DelimiterNotFound:
                self.oversized = str(ReplyTooLarge(self.limit))
                # Its process ends now, not when the pool gets to close the session.
                await terminate_posix_process_tree(process, 0)
            except (
                anyio.IncompleteRead,
                anyio.EndOfStream,
                anyio.ClosedResourceError,
                anyio.BrokenResourceError,
            ):
                pass


async def _write(process: Process, messages: ObjectReceiveStream[SessionMessage]) -> None:
    assert process.stdin is not None
    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        async with messages:
            async for message in messages:
                line = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                await process.stdin.send(line.encode())


def _parse(line: bytes) -> SessionMessage | Exception:
    """A message, or the parse error for the session to surface (as the SDK's stdio client does)."""
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


async def _stop(process: Process) -> None:
    """Close its stdin, give it the grace period to exit, then end its whole process group."""
    assert process.stdin is not None
    with contextlib.suppress(OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
        await process.stdin.aclose()
    with anyio.move_on_after(EXIT_GRACE_SECONDS):
        while process.returncode is None:
            await anyio.sleep(0.01)
    if process.returncode is None:
        await terminate_posix_process_tree(process, EXIT_GRACE_SECONDS)
    with anyio.move_on_after(EXIT_GRACE_SECONDS):
        await process.aclose()
