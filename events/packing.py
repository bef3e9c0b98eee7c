"""Redis commands packed into the wire protocol (RESP) in one pass, for the batch's connections.

redis-py's asyncio connection packs each argument through ``Encoder.encode`` (five ``isinstance``
checks) and grows the command's buffer by one ``bytes.join`` per argument; for the pipelines of
``events.batch`` that was over a third of redis-py's CPU per message (under ``cProfile``, 32
messages of three commands a pipeline). Here a command of ``str``, ``bytes``, ``int`` and ``float``
arguments is packed by hiredis's C packer where the encoding is redis-py's default (UTF-8, strict),
which writes them as redis-py does (a float as its ``repr``); anything else is packed here, the
common types inline and the rest through the connection's own encoder. A whole pipeline is joined
once. So the bytes on the wire, and the errors for arguments Redis cannot take, are redis-py's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.connection import Encoder
from redis.typing import EncodableT

_CRLF = b"\r\n"


def pack_commands(commands: Iterable[Iterable[EncodableT]], encoder: Encoder) -> bytes:
    """``commands`` as one piece of wire protocol, arguments encoded as ``encoder`` does."""
    pieces: list[bytes] = []
    in_c = encoder.encoding == "utf-8" and encoder.encoding_errors == "strict"
    for command in commands:
        args: Any = tuple(command)
        name = args[0]
        # hiredis would send a multi-word name ("SCRIPT LOAD") as one argument.
        if in_c and (b" " if type(name) is bytes else " ") not in name:
            try:
                pieces.append(hiredis.pack_command(args))
                continue
            except TypeError:  # an argument of another type: None, a bool, a memoryview, an enum
                pass
        _pack(args, encoder, pieces)
    return b"".join(pieces)


class LeanPacking(AbstractConnection):
    """Mixed into a connection class ahead of it (``lean_connection_class``)."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        return [pack_commands((args,), self.encoder)]

    def pack_commands(self, commands: Iterable[Iterable[EncodableT]]) -> list[bytes]:
        return [pack_commands(commands, self.encoder)]


def _pack(args: tuple[EncodableT, ...], encoder: Encoder, pieces: list[bytes]) -> None:
    name: Any = args[0]
    # Multi-word command names ("SCRIPT LOAD") go as separate arguments, as in redis-py.
    if isinstance(name, str):
        head = name.encode().split()
    elif b" " in name:
        head = name.split()
    else:
        head = [name]
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
