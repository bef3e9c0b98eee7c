"""Live entries written straight to the connection (api.sse_direct) under a real uvicorn (httptools):
a waiting subscriber gets them without its task, in valid chunks, byte for byte what the task would
have sent; a client that stops reading pauses the transport, and its entries then go through its task
(which waits for the buffer to drain), still all of them, in order and once, across a fall behind
and the catch-up from Redis; heartbeats still come between live entries."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import uvicorn
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.response import ServerSentEvent
from redis.asyncio import Redis

from api import event_hub
from api.event_hub import EventHub
from api.sse import OpenStreams, session_event_stream, sse_response, to_sse
from api.sse_direct import DirectBody
from events import replies
from events.envelope import Event, EventType
from events.results import append_result
from events.streams import FIELD, Names
from tests.fixtures.stack import free_port


@dataclass
class Served:
    port: int
    hub: EventHub
    # Direct writes done, and refused (the stream then went through its task).
    written: list[int]


def _app(redis: Redis, names: Names, hub: EventHub, heartbeat: float) -> Litestar:
    @get("/events/{session_id:str}")
    async def events(session_id: FromPath[str]) -> ServerSentEvent:
        return await sse_response(
            redis, session_event_stream(redis, names, hub, session_id, None, heartbeat), OpenStreams()
        )

    return Litestar([events])


@pytest.fixture
async def served(aredis: Redis, names: Names, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    """The app under uvicorn's httptools protocol, on this loop, with a tally of the direct writes."""
    written = [0, 0]
    write: Callable[[DirectBody, bytes], bool] = DirectBody.write

    def counted(self: DirectBody, framed: bytes) -> bool:
        done = write(self, framed)
        written[0 if done else 1] += 1
        return done

    monkeypatch.setattr(DirectBody, "write", counted)
    hub = EventHub(aredis, names)
    await hub.start()
    port = free_port()
    config = uvicorn.Config(
        _app(aredis, names, hub, 0.3),
        host="127.0.0.1",
        port=port,
        http="httptools",
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield Served(port, hub, written)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
        await hub.stop()


async def log(aredis: Redis, names: Names, session_id: str, count: int, pad: int = 0) -> list[str]:
    event = Event(
        type=EventType.AGENT_ERROR, org_id=uuid.uuid4(), user_id=None, session_id=uuid.UUID(session_id)
    )
    return [
        await append_result(
            aredis, names, event.model_copy(update={"payload": {"n": n, "pad": "x" * pad}}), 10_000
        )
        for n in range(count)
    ]


class Stream:
    """A raw HTTP/1.1 SSE client whose body is decoded chunk by chunk, so framing errors fail."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.body = b""

    @classmethod
    async def open(cls, port: int, path: str, receive_buffer: int | None = None) -> Stream:
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # A small limit: the reader stops reading the socket while its buffer is full.
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
        return cls(reader, writer)

    async def until(self, done: Callable[[bytes], bool], timeout: float = 20) -> bytes:
        async with asyncio.timeout(timeout):
            while not done(self.body):
                size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
                assert size > 0, "the stream ended"
                self.body += (await self.reader.readexactly(size + 2))[:-2]
        return self.body

    async def until_ids(self, ids: list[str], timeout: float = 20) -> None:
        await self.until(lambda _: len(self.ids()) >= len(ids), timeout)
        assert self.ids() == ids

    def ids(self) -> list[str]:
        return [line[4:].decode() for line in self.body.splitlines() if line.startswith(b"id: ")]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_a_waiting_subscriber_gets_live_entries_written_directly(
    served: Served, aredis: Redis, names: Names
) -> None:
    session_id = str(uuid.uuid4())
    stream = await Stream.open(served.port, f"/events/{session_id}")
    try:
        await stream.until(lambda body: b": connected" in body)
        while served.hub.subscriber_count == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the stream's task is waiting for entries
        ids = []
        for _ in range(3):
            ids += await log(aredis, names, session_id, 1)
            await stream.until_ids(ids)
        entries = replies.entries(await aredis.xrange(names.session_log(session_id)))
        expected = b"".join(to_sse((entry_id, fields[FIELD])).encode() for entry_id, fields in entries)
        assert stream.body.endswith(expected)
        assert served.written == [3, 0], "each entry was written to the connection, not by the task"
        # A quiet period: heartbeats (through the task), then live entries directly again.
        await stream.until(lambda body: b": ping" in body)
        ids += await log(aredis, names, session_id, 2)
        await stream.until_ids(ids)
        assert served.written[1] == 0 and served.written[0] >= 4
    finally:
        await stream.close()


async def test_a_client_that_stops_reading_gets_every_entry_once_in_order(
    served: Served, aredis: Redis, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its transport pauses, the direct writes stop, the task waits for the buffer; its queue
    overflows meanwhile (a small one here), so it reads the rest from Redis after the last entry
    it was given, whether that was written directly or by the task."""
    monkeypatch.setattr(event_hub, "SUBSCRIBER_QUEUE_SIZE", 20)
    session_id = str(uuid.uuid4())
    stream = await Stream.open(served.port, f"/events/{session_id}", receive_buffer=4096)
    try:
        await stream.until(lambda body: b": connected" in body)
        while served.hub.subscriber_count == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        ids = []
        for _ in range(30):  # in rounds, so that some are offered while the task waits
            ids += await log(aredis, names, session_id, 10, pad=30_000)
            await asyncio.sleep(0.005)
        assert served.written[0] > 0 and served.written[1] > 0, "written directly, then through the task"
        await stream.until_ids(ids, timeout=60)
    finally:
        await stream.close()
