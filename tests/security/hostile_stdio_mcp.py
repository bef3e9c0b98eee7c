"""A stdio MCP server written by a hostile tenant, speaking JSON-RPC by hand (the SDK's server
would divert stray writes to stdout away from the wire): ``flood`` prints ``FLOOD_BYTES`` without a
newline (then sleeps, so only the client can end it); ``hello`` answers."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

FLOOD_BYTES = 32 * 1024 * 1024
CHUNK = b"x" * (64 * 1024)
TOOLS = [{"name": name, "inputSchema": {"type": "object"}} for name in ("hello", "flood")]


def answer(request_id: Any, result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": False}


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue
        if method == "initialize":
            answer(
                request_id,
                {
                    "protocolVersion": message["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "hostile-stdio", "version": "1"},
                },
            )
        elif method == "tools/list":
            answer(request_id, {"tools": TOOLS})
        elif method == "tools/call" and message["params"]["name"] == "flood":
            for _ in range(FLOOD_BYTES // len(CHUNK)):
                os.write(1, CHUNK)
            time.sleep(3600)
        elif method == "tools/call":
            answer(request_id, text("hello"))
        else:
            answer(request_id, {})


if __name__ == "__main__":
    main()
