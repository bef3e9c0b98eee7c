"""A process in a pseudo-terminal with a virtual screen (pyte). Agent-agnostic, Redis-free.

Asyncio-native: the PTY master is read with ``loop.add_reader``, so one host process can keep
hundreds of sessions without a thread each. The screen answers the terminal queries TUIs send
(cursor position, device attributes) through the PTY, as a real terminal would.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import fcntl
import functools
import os
import resource
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyte
from wcwidth import wcwidth

from workers.sandbox import Sandbox

PR_SET_PDEATHSIG = 1
# Looked up in the parent: the child between fork and exec should do as little as it can.
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent_pid: int) -> None:
    """In a child before exec: be killed when the host process dies, even by kill -9, so a session
    recovered elsewhere never shares its workspace with a stale agent (one that ignores the PTY's
    hangup would outlive its host). Linux sends the signal when the thread that forked exits; hosts
    fork from their event loop's thread, which lives as long as the process."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the host died before the prctl took effect
        os._exit(1)


@dataclass(frozen=True)
class ResourceLimits:
    """Per-process rlimits applied in the child before exec; None leaves a limit as inherited."""

    address_space_bytes: int | None = None
    cpu_seconds: int | None = None
    file_size_bytes: int | None = None
    processes: int | None = None

    def apply(self) -> None:
        for limit, value in (
            (resource.RLIMIT_AS, self.address_space_bytes),
            (resource.RLIMIT_CPU, self.cpu_seconds),
            (resource.RLIMIT_FSIZE, self.file_size_bytes),
            (resource.RLIMIT_NPROC, self.processes),
        ):
            if value is not None:
                resource.setrlimit(limit, (value, value))


class _Screen(pyte.Screen):
    """A pyte screen whose replies to terminal queries go back to the process."""

    def __init__(self, columns: int, lines: int, reply: Callable[[str], None]) -> None:
        super().__init__(columns, lines)
        self._reply = reply

    def write_process_input(self, data: str) -> None:
        self._reply(data)

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        # ``CSI > … m`` is xterm's key-modifier mode (Gemini CLI sends it), not a rendition; pyte
        # would raise on it and lose the rest of the chunk.
        if not private:
            super().select_graphic_rendition(*attrs)

    def text(self) -> str:
        """What pyte's ``display`` shows, rows right-trimmed, at a fraction of its cost: ``display``
        asks wcwidth about each of the 4,800 cells (~1.5 ms on a quiet VM), while most rows are empty
        and most others hold no wide character, so that joining their cells is already the row."""
        rows = []
        for y in range(self.lines):
            line = self.buffer.get(y)
            if not line:
                rows.append("")
                continue
            cells = [line[x].data for x in range(min(max(line) + 1, self.columns))]
            row = "".join(cells)
            if not row.isascii() and any(map(_is_wide, set(row))):
                row = self._wide_row(cells)
            rows.append(row.rstrip())
        return "\n".join(rows).rstrip("\n")

    @staticmethod
    def _wide_row(cells: list[str]) -> str:
        """pyte's rendering of a row: the cell after a wide character is its stub."""
        parts, stub = [], False
        for data in cells:
            if not stub:
                parts.append(data)
            stub = not stub and _is_wide(data[:1])
        return "".join(parts)


@functools.lru_cache(maxsize=4096)
def _is_wide(char: str) -> bool:
    return wcwidth(char) == 2


class PtySession:
    def __init__(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        columns: int = 120,
        rows: int = 40,
        limits: ResourceLimits | None = None,
        on_output: Callable[[], None] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.argv = argv
        self.sandbox = sandbox
        self.cwd = cwd
        self.env = env
        self.limits = limits or ResourceLimits()
        self.on_output = on_output
        self.screen = _Screen(columns, rows, self._reply)
        self._stream = pyte.Stream(self.screen)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._master: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._eof = asyncio.Event()
        self.last_output = time.monotonic()
        self.last_input = 0.0
        # Set on every read, write and EOF, so a watcher of an idle terminal can wait instead of poll.
        self.activity = asyncio.Event()
        # Input the terminal could not take yet (its buffer was full): written, in order, once the
        # loop says the master is writable again.
        self._unwritten = bytearray()
        # The rendered screen and the feed it shows: the watcher, the
        # mirror and a typed turn each look at the same screen between two reads.
        self._feeds = 0
        self._rendered: tuple[int, str] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    async def start(self) -> None:
        master, slave = os.openpty()
        _set_size(slave, self.screen.columns, self.screen.lines)
        limits, host_pid = self.limits, os.getpid()

        def in_child() -> None:
            die_with_parent(host_pid)
            # A new session (start_new_session) whose controlling terminal is the PTY.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            limits.apply()

        argv = self.sandbox.wrap(self.argv, self.cwd) if self.sandbox else self.argv
        try:
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - the PTY slave must be the child's stdio
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=in_child,
                close_fds=True,
                pass_fds=self.sandbox.pass_fds if self.sandbox else (),
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        asyncio.get_running_loop().add_reader(master, self._read)
        if self.sandbox:
            try:
                await self.sandbox.attach()
            except BaseException:
                await self.terminate(grace=0)
                raise

    def _read(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.activity.set()
        if not data:
            self._close_master()
            return
        self._feeds += 1
        self._stream.feed(self._decoder.decode(data))
        self.last_output = time.monotonic()
        if self.on_output:
            self.on_output()

    def _reply(self, data: str) -> None:
        self.write(data.encode())

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the agent and write what the terminal takes now, never blocking the
        loop: an agent that stops reading fills the PTY's buffer, and one host runs many sessions."""
        if self._master is None:
            raise ProcessLookupError("the process has exited")
        self.last_input = time.monotonic()
        self.activity.set()
        waiting = bool(self._unwritten)
        self._unwritten += data
        if not waiting:
            self._flush()

    def _flush(self) -> None:
        assert self._master is not None
        try:
            written = os.write(self._master, self._unwritten)
        except BlockingIOError:
            written = 0
        except OSError:
            # The agent is gone; EOF on the reader closes the session.
            written = len(self._unwritten)
        del self._unwritten[:written]
        loop = asyncio.get_running_loop()
        if self._unwritten:
            loop.add_writer(self._master, self._flush)
        else:
            loop.remove_writer(self._master)

    def snapshot(self) -> str:
        if self._rendered is None or self._rendered[0] != self._feeds:
            self._rendered = (self._feeds, self.screen.text())
        return self._rendered[1]

    async def wait(self) -> int:
        await self._eof.wait()
        assert self._proc is not None
        while self._proc.poll() is None:
            await asyncio.sleep(0.05)
        return int(self._proc.returncode)

    @property
    def exited(self) -> bool:
        return self._eof.is_set()

    async def terminate(self, grace: float = 3.0) -> None:
        """SIGTERM the whole process group, SIGKILL after ``grace`` seconds."""
        if self._proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if self._proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)
            deadline = time.monotonic() + wait
            while self._proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._close_master()

    def _close_master(self) -> None:
        if self._master is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                loop = asyncio.get_running_loop()
                loop.remove_reader(self._master)
                loop.remove_writer(self._master)
            os.close(self._master)
            self._master = None
        self._eof.set()


def _set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
