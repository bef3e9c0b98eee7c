"""Graceful shutdown of the ingress.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and waits for open ones to finish;
SSE responses never finish on their own. So the signal also sets the app's draining event: /ready
turns 503 (load balancers stop routing here), and every SSE stream ends with a ``retry:`` hint, so
clients reconnect to another replica at once and resume with Last-Event-ID, losing nothing.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from litestar import Litestar


def begin_draining(app: Litestar) -> None:
    resources = app.state.get("resources")
    if resources is not None:
        resources.draining.set()


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between bytecodes: hand the event to the loop rather than set it here.
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(begin_draining, self.app)
        super().handle_exit(sig, frame)
