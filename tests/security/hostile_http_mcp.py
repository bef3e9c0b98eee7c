"""A Streamable HTTP MCP server written by a hostile tenant, in a thread of the test process: it
speaks enough JSON-RPC for a client to connect, then answers some tools with a reply that never
ends (one endless SSE event, endless progress notifications, a JSON body of a gigabyte) or that
drips a byte at a time. ``modern``: the stateless protocol (the light client stays); otherwise it
claims 2024-11-05, which the light client hands to fastmcp's client."""

from __future__ import annotations

import itertools
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

CHUNK = 64 * 1024
Served = TypeVar("Served", bound=ThreadingHTTPServer)
TOOLS = ["hello", "endless_event", "endless_progress", "huge_json", "slow_drip"]


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, name: str, modern: bool, tls: ssl.SSLContext | None) -> None:
        super().__init__((host, port), _Handler)
        self.name, self.modern = name, modern
        # The TLS server names (SNI) clients asked for.
        self.server_names: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        # Set when a client hung up on an endless reply (the worker closed that connection).
        self.hung_up = threading.Event()
        # (Host header, tool) of every tools/call, to show which server a client reached.
        self.calls: list[tuple[str, str]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextmanager
def hostile_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    name: str = "hostile",
    modern: bool = True,
    tls: ssl.SSLContext | None = None,
) -> Iterator[HostileServer]:
    with serving(HostileServer(host, port, name, modern, tls)) as server:
        yield server


@contextmanager
def serving(server: Served) -> Iterator[Served]:
    """``server`` answering in a thread of its own, until the block ends."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """Kept-alive connections, and no log line per request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


class _Handler(QuietHandler):
    server: HostileServer

    def do_DELETE(self) -> None:
        self._send(405, b"")

    def do_GET(self) -> None:
        self._send(405, b"")

    def do_POST(self) -> None:
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            self._send(202, b"")
        elif method == "server/discover" and self.server.modern:
            self._result(request_id, {"supportedVersions": ["2026-07-28"]})
        elif method == "server/discover":
            self._json({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "no"}})
        elif method == "initialize":
            info = {"name": self.server.name, "version": "1"}
            self._result(
                request_id,
                {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}, "serverInfo": info},
            )
        elif method == "tools/list":
            self._result(
                request_id, {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]}
            )
        elif method == "tools/call":
            tool = message["params"]["name"]
            self.server.calls.append((self.headers.get("Host", ""), tool))
            getattr(self, tool)(request_id)
        else:
            self._json({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": method}})

    def hello(self, request_id: Any) -> None:
        self._result(request_id, {"content": [{"type": "text", "text": f"hello from {self.server.name}"}]})

    def endless_event(self, request_id: Any) -> None:
        self._endless("text/event-stream", b"data: ", itertools.repeat(b"x" * CHUNK))

    def endless_progress(self, request_id: Any) -> None:
        def events() -> Iterator[bytes]:
            for n in itertools.count(1):
                note = {"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": request_id, "progress": n}}  # fmt: skip
                yield f"data: {json.dumps(note)}\n\n".encode()

        self._endless("text/event-stream", b"", events())

    def huge_json(self, request_id: Any) -> None:
        head = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": {"content": []}, "pad": ""})[:-2]
        self._endless("application/json", head.encode(), itertools.repeat(b"x" * CHUNK), length=1 << 30)

    def slow_drip(self, request_id: Any) -> None:
        def drip() -> Iterator[bytes]:
            while True:
                time.sleep(0.05)
                yield b"x"

        self._endless("text/event-stream", b"data: ", drip())

    def _endless(self, kind: str, head: bytes, body: Iterator[bytes], length: int | None = None) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length" if length else "Connection", str(length) if length else "close")
        self.end_headers()
        try:
            self.wfile.write(head)
            for chunk in body:
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.server.hung_up.set()

    def _result(self, request_id: Any, result: dict[str, Any]) -> None:
        self._json({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _json(self, message: dict[str, Any]) -> None:
        self._send(200, json.dumps(message).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
