"""Redis commands packed into the wire protocol (RESP) in one pass, for the batch's connections.

redis-py's asyncio connection packs each argument through ``Encoder.encode`` (five ``isinstance``
checks) and grows the command's buffer by one ``bytes.join`` per argument; for the pipelines of
``events.batch`` that was over a third of redis-py's CPU per message (under ``cProfile``, 32
messages of three commands a pipeline). Here the common types (``str``, ``bytes``, ``int``) are
encoded inline and a whole pipeline is joined once; anything else goes through the connection's
own encoder, so the bytes on the wire, and the errors for arguments Redis cannot take, are
redis-py's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.typing import EncodableT

_CRLF = b"\r\n"


class LeanPacking(AbstractConnection):
    """Mixed into a connection class ahead of it (``lean_connection_class``)."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        pieces: list[bytes] = []
        self._pack(args, pieces)
        return [b"".join(pieces)]

    def pack_commands(self, commands: Iterable[Iterable[EncodableT]]) -> list[bytes]:
        pieces: list[bytes] = []
        for command in commands:
            self._pack(tuple(command), pieces)
        return [b"".join(pieces)]

    def _pack(self, args: tuple[EncodableT, ...], pieces: list[bytes]) -> None:
        name: Any = args[0]
        # Multi-word command names ("SCRIPT LOAD") go as separate arguments, as in redis-py.
        if isinstance(name, str):
            head = name.encode().split()
        elif b" " in name:
            head = name.split()
        else:
            head = [name]
        encoder = self.encoder
        encoding, errors = encoder.encoding, encoder.encoding_errors
        pieces.append(b"*%d\r\n" % (len(head) + len(args) - 1))
        for arg in (*head, *args[1:]):
            kind = type(arg)
            if kind is str:
                data: Any = arg.encode(encoding, errors)  # type: ignore[union-attr]  # kind is str
            elif kind is bytes:
                data = arg
            elif kind is int:
                data = b"%d" % arg  # type: ignore[str-format]  # kind is int
            else:
                data = encoder.encode(arg)
            pieces += (b"$%d\r\n" % len(data), data, _CRLF)


def lean_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """``base`` (the class redis-py picked for the URL: TCP, TLS or a Unix socket), packing as
    ``LeanPacking`` does."""
    return type(f"Lean{base.__name__}", (LeanPacking, base), {})
