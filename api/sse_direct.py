"""An SSE stream's live chunks written straight to its connection, for uvicorn's httptools protocol.

In a fan-out, each live event went to each subscriber through its own task (woken, resumed through
the stream's generators), Litestar's and the edge's ``send`` wrappers and uvicorn's ``send``, which
frames the chunk and writes it: ~20 µs of Python per subscriber and event beside the ~14 µs of the
``write`` itself, on a 2-core VM. A subscriber waiting with nothing unsent needs none of it: the
hub's waker writes the chunk (framed once for all the subscribers that get it) to the transport, as
uvicorn's ``send`` would. Whenever that cannot be done in order (the transport is paused because the
client reads slowly, the client left, the response is not chunked) the subscriber's task is woken
and sends through ASGI as before, so a slow client still waits for its own buffer to drain.

Only uvicorn's httptools ``RequestResponseCycle`` (what ``agentapi serve`` runs) is recognised. It is
reached through the ``receive`` it handed the app, which no middleware here wraps; any other server,
protocol or a test's client gives None, and the stream keeps to ASGI.
"""

from __future__ import annotations

from litestar.types import Receive
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


def chunk(body: bytes) -> bytes:
    """``body`` framed as one chunk of a chunked response (as uvicorn's ``send`` frames it)."""
    return b"%x\r\n%b\r\n" % (len(body), body)


class DirectBody:
    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle

    def write(self, framed: bytes) -> bool:
        """Writes ``framed`` (see :func:`chunk`) now if that keeps the stream in order, else False:
        the caller then sends it through ASGI, which waits for a paused transport."""
        cycle = self._cycle
        if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete:
            return False
        cycle.transport.write(framed)
        return True


def direct_body(receive: Receive) -> DirectBody | None:
    """The connection under a response whose head was sent chunked, when uvicorn's httptools
    protocol serves it; None otherwise."""
    cycle = getattr(receive, "__self__", None)
    if type(cycle) is not RequestResponseCycle or cycle.chunked_encoding is not True:
        return None
    return DirectBody(cycle)
