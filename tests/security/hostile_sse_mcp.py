"""An MCP server over the SSE transport (a GET event stream for the session, POSTs to the endpoint
it names) written by a hostile tenant, in a thread of the test process. ``hello`` answers;
``endless_progress`` and ``endless_noise`` never answer but keep the stream busy with small
events: progress notifications for the call, or log notifications and comments that belong to no
call."""

from __future__ import annotations

import itertools
import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.security.hostile_http_mcp import QuietHandler, serving

TOOLS = ["hello", "endless_progress", "endless_noise"]


class HostileSseServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        # Per session, what its event stream still has to send (None: start flooding).
        self.outboxes: dict[str, queue.Queue[bytes | Iterator[bytes]]] = {}
        # Bytes written on all event streams, and set when a client hung up on one.
        self.sent = 0
        self.hung_up = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/sse"


@contextmanager
def hostile_sse_server() -> Iterator[HostileSseServer]:
    with serving(HostileSseServer()) as server:
        yield server


def _event(message: dict[str, Any]) -> bytes:
    return f"event: message\ndata: {json.dumps(message)}\n\n".encode()


def _progress(request_id: Any) -> Iterator[bytes]:
    for n in itertools.count(1):
        params = {"progressToken": request_id, "progress": n}
        yield _event({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})


def _noise() -> Iterator[bytes]:
    for n in itertools.count(1):
        params = {"level": "info", "data": f"noise {n}"}
        yield _event({"jsonrpc": "2.0", "method": "notifications/message", "params": params})
        yield b": keep-alive\n\n"


class _Handler(QuietHandler):
    server: HostileSseServer

    def do_GET(self) -> None:
        session = str(len(self.server.outboxes))
        outbox: queue.Queue[bytes | Iterator[bytes]] = queue.Queue()
        self.server.outboxes[session] = outbox
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self._write(f"event: endpoint\ndata: /messages?session={session}\n\n".encode())
            while True:
                item = outbox.get()
                for chunk in [item] if isinstance(item, bytes) else item:
                    self._write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.server.hung_up.set()

    def _write(self, chunk: bytes) -> None:
        self.wfile.write(chunk)
        self.wfile.flush()
        self.server.sent += len(chunk)

    def do_POST(self) -> None:
        outbox = self.server.outboxes[parse_qs(urlsplit(self.path).query)["session"][0]]
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            return
        result: dict[str, Any] = {}
        if method == "initialize":
            info = {"name": "hostile-sse", "version": "1"}
            result = {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}, "serverInfo": info}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]}
        elif method == "tools/call" and message["params"]["name"] == "endless_progress":
            outbox.put(_progress(message["params"].get("_meta", {}).get("progressToken", request_id)))
            return
        elif method == "tools/call" and message["params"]["name"] == "endless_noise":
            outbox.put(_noise())
            return
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "hello from hostile-sse"}]}
        outbox.put(_event({"jsonrpc": "2.0", "id": request_id, "result": result}))
