"""Graceful shutdown of the ingress.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and waits for open ones to finish;
SSE responses never finish on their own. So the signal also sets the app's draining event: /ready
turns 503 (load balancers stop routing here), and every SSE stream ends with a ``retry:`` hint, so
clients reconnect to another replica at once and resume with Last-Event-ID, losing nothing.

The app hooks the signals itself, in its lifespan (which uvicorn starts after installing its own
handlers), so each process of ``agentapi serve --workers N`` drains as a single one does.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from litestar import Litestar

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def begin_draining(app: Litestar) -> None:
    resources = app.state.get("resources")
    if resources is not None:
        resources.streams.drain()


@asynccontextmanager
async def drain_on_signals(app: Litestar) -> AsyncIterator[None]:
    """While the app runs, SIGINT and SIGTERM set its draining event, then reach the server's handler."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handle(sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between bytecodes: hand the event to the loop rather than set it here.
        if not loop.is_closed():
            loop.call_soon_threadsafe(begin_draining, app)
        handler = previous.get(sig)
        if callable(handler):
            handler(sig, frame)
        elif handler == signal.SIG_DFL:  # no server handles it: what the signal would have done
            signal.signal(sig, handler)
            signal.raise_signal(sig)

    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for number, handler in previous.items():
            if signal.getsignal(number) is handle:
                signal.signal(number, handler)
