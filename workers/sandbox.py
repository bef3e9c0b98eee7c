"""Confinement for every process run on a tenant's behalf (agents, their routers, stdio MCP servers).

Each sandbox is a bubblewrap (``bwrap``) container, entered as a uid of its own through ``setpriv``:

- **Filesystem:** a fresh root with the system directories, the Python environment and the repo's
  agent binaries read-only, a synthetic ``/etc`` (passwd, group, hosts; TLS roots), a private
  ``/tmp``, and the paths it is given (its workspace) read-write. No other workspace, service
  config, ``/root`` or secret file exists in it.
- **Processes:** its own PID namespace with a fresh ``/proc``: it sees its own tree only, so it can
  neither read another process's environment nor signal one. ``no_new_privs`` is set, every
  capability dropped, and the uid (derived from the session id) is one no other sandbox shares, so
  the per-process rlimits (``RLIMIT_NPROC``) count this session alone.
- **Network:** its own network namespace with nothing but loopback. What it may reach is forwarded
  in by the worker: a listening socket is made *inside* the namespace (``setns`` on a throwaway
  thread) and each connection accepted there is relayed to the real endpoint. Redis, PostgreSQL,
  metadata addresses and other sessions are therefore unreachable by construction, while
  everything the sandboxed tree binds on its own loopback (codex's local MCP servers, a router)
  just works. Named hosts (``https://api.anthropic.com``) are mapped in its ``/etc/hosts`` to a
  loopback alias whose port is forwarded, so TLS still sees the real name.

Chosen over Landlock port rules because those cannot tell one address from another (allowing
port 443 for a model endpoint would allow it for every address) nor a session's own loopback
ports from another session's; a namespace has neither problem and costs one fork of ``bwrap``.
Needs: ``bwrap`` and ``setpriv`` on PATH, and a worker allowed to create namespaces and ``setns``
into them (root or CAP_SYS_ADMIN in a container; see the README's "Sandbox" section).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from schemas.settings import Settings
from services.egress import EgressRefused, Resolver, check_endpoint, resolve
from services.sandbox_probe import UID_BASE, SandboxUnavailable, probe, require_tools

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CLONE_NEWNET = 0x40000000
# Sandbox uids live far above any system or login account.
UID_SPAN = 0x1000_0000
# Files from /etc a CLI needs (TLS roots, the dynamic linker, time zones); the rest of /etc stays out.
ETC_READ = ("ssl", "ca-certificates", "pki", "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
            "localtime", "nsswitch.conf", "terminfo", "mime.types", "bash.bashrc", "inputrc", "profile",
            "gitconfig")  # fmt: skip
RELAY_CHUNK = 65536
# Files bigger than this are not config files a CLI copied a token into.
SECRET_SCAN_BYTES = 1 << 20
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432}
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def sandbox_uid(key: str, role: str = "agent") -> int:
    """A uid for one session's processes of one role (agent, router), stable across recoveries."""
    digest = hashlib.sha256(f"{role}:{key}".encode()).digest()
    return UID_BASE + int.from_bytes(digest[:8], "big") % UID_SPAN


@dataclass(frozen=True)
class Endpoint:
    """Where a sandboxed process may connect: a host (name or address) and TCP port. ``tenant_scheme``
    marks a URL a tenant configured (a router's provider): its name may answer anything by the time a
    connection is made, so each one runs the egress check for ``scheme://host:port`` and goes to the
    addresses that check vetted. The platform's own endpoints (None) are trusted as configured, private
    ones included."""

    host: str
    port: int
    tenant_scheme: str | None = None

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.tenant_scheme or 'https'}://{host}:{self.port}"


def endpoint_of(url: str, tenant: bool = False) -> Endpoint | None:
    """The host and port an http(s) URL connects to, or None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return Endpoint(parts.hostname, port, parts.scheme if tenant else None)


@dataclass
class Forward:
    """Connections to ``listen`` inside the sandbox reach ``target`` (an endpoint the worker can
    reach, or a port inside another sandbox)."""

    listen: tuple[str, int]
    target: Endpoint | tuple[Sandbox, int]


@dataclass
class Sandbox:
    """One confined process tree. ``wrap`` the argv, spawn it with ``pass_fds``, then ``attach``."""

    name: str
    uid: int
    # Scratch directory for this sandbox's synthetic /etc files (outside every tenant mount).
    runtime: Path
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    peers: tuple[tuple[Sandbox, int], ...] = ()
    # The egress rules a tenant endpoint's connections are checked against (required if there is one).
    settings: Settings | None = None
    resolver: Resolver = resolve
    _forwards: list[Forward] = field(default_factory=list)
    _hosts: dict[str, str] = field(default_factory=dict)
    _info: tuple[int, int] | None = None
    _block: tuple[int, int] | None = None
    _netns: int | None = None
    _servers: list[asyncio.Server] = field(default_factory=list)
    _relays: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.settings is None and any(e.tenant_scheme for e in self.endpoints):
            raise ValueError("a sandbox forwarding a tenant's endpoint needs the egress settings")
        aliases = 1
        for endpoint in self.endpoints:
            address = _loopback(endpoint.host)
            if address is None:
                # A named host: its own loopback alias, so several can share a port (443).
                address = self._hosts.setdefault(endpoint.host, f"127.0.1.{aliases}")
                aliases = len(self._hosts) + 1
            self._forwards.append(Forward((address, endpoint.port), endpoint))
        for peer, port in self.peers:
            self._forwards.append(Forward(("127.0.0.1", port), (peer, port)))

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self._info[1], self._block[0]) if self._info and self._block else ()

    def wrap(self, argv: list[str], cwd: Path) -> list[str]:
        """The bwrap command line that runs ``argv`` in ``cwd`` inside this sandbox."""
        bwrap, setpriv = require_tools()
        self._write_etc()
        args = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-net", "--unshare-cgroup-try", "--hostname", "sandbox",
                "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--dir", "/run",
                "--perms", "0755", "--dir", "/etc"]  # fmt: skip
        for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = Path("/") / top
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        for name in ETC_READ:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        for name in ("passwd", "group", "hosts"):
            args += ["--ro-bind", str(self.runtime / name), f"/etc/{name}"]
        mounts = [("--ro-bind", path) for path in _code_paths() + self.readable]
        # Workspaces may live under the repo (the dev default): hide all of them, then show this one.
        mounts += [("--tmpfs", hidden) for hidden in _workspace_roots(self.writable)]
        mounts += [("--bind", path) for path in self.writable]
        made: set[Path] = {Path("/"), Path("/tmp"), Path("/etc"), Path("/run")}
        for kind, path in mounts:
            # bwrap would create the directories above a mount 0700 (unreachable for the sandbox's
            # uid); 0711 lets it pass through them without listing what else was there.
            for parent in reversed(path.parents):
                if parent not in made:
                    made.add(parent)
                    args += ["--perms", "0711", "--dir", str(parent)]
            args += [kind, str(path)] if kind == "--tmpfs" else [kind, str(path), str(path)]
            made.add(path)
        args += ["--chdir", str(cwd)]
        if self._forwards:
            # bwrap reports the sandbox's pid, then waits until the forwards listen inside it.
            self._info, self._block = os.pipe(), os.pipe()
            args += ["--info-fd", str(self._info[1]), "--block-fd", str(self._block[0])]
        # setpriv, not bwrap's --uid: that needs a user namespace, whose uid would map back to root.
        args += ["--", setpriv, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                 "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--", *argv]  # fmt: skip
        return args

    def _write_etc(self) -> None:
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        hosts = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{address} {name}\n" for name, address in self._hosts.items()
        )
        files = {
            "passwd": f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{self.uid}:{self.uid}::/tmp:/bin/sh\n",
            "group": f"root:x:0:\nsandbox:x:{self.uid}:\n",
            "hosts": hosts,
        }
        for name, text in files.items():
            (self.runtime / name).write_text(text)
            (self.runtime / name).chmod(0o644)

    async def attach(self) -> None:
        """After the spawn: open its network namespace, listen for each forward inside it, and let
        the sandboxed program start (bwrap waits on its block fd until then)."""
        if not (self._info and self._block):
            return
        (info, info_child), (block_child, block) = self._info, self._block
        # Closed here once: an fd number closed twice may by then be someone else's socket.
        self._info = self._block = None
        os.close(info_child)
        os.close(block_child)
        try:
            details = await asyncio.to_thread(_read_info, info)
            self._netns = os.open(f"/proc/{details['child-pid']}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            for forward in self._forwards:
                listener = await _in_netns(self._netns, partial(_listen, forward.listen))
                self._servers.append(
                    await asyncio.start_server(partial(self._relay, forward=forward), sock=listener)
                )
        finally:
            os.close(info)
            with contextlib.suppress(OSError):
                os.write(block, b"1")
            os.close(block)

    async def open_connection(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``127.0.0.1:port`` inside this sandbox (a router's port, for its agent)."""
        if self._netns is None:
            raise ConnectionRefusedError("the sandbox is not running")
        sock = await _in_netns(self._netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, forward: Forward
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            target = forward.target
            if isinstance(target, Endpoint):
                up_reader, up_writer = await self._connect(target)
            else:
                up_reader, up_writer = await target[0].open_connection(target[1])
        except (OSError, EgressRefused) as exc:
            if isinstance(exc, EgressRefused):
                log.warning("sandbox %s: connection to %s refused: %s", self.name, target, exc.reason)
            writer.close()
            self._relays.discard(task)
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._relays.discard(task)
            writer.close()
            up_writer.close()

    async def _connect(self, target: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``target``; to a tenant's, at an address its egress check vetted just now
        (the relay is plain TCP: TLS runs end to end from the sandboxed client, under the name)."""
        if target.tenant_scheme is None:
            return await asyncio.open_connection(target.host, target.port)
        assert self.settings is not None  # __post_init__ requires it for a tenant endpoint
        addresses = await check_endpoint(target.url(), self.settings, "api_base_url", self.resolver)
        for address in addresses[:-1]:
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(str(address), target.port)
        return await asyncio.open_connection(str(addresses[-1]), target.port)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for relay in list(self._relays):
            relay.cancel()
        self._servers.clear()
        if self._netns is not None:
            os.close(self._netns)
            self._netns = None
        for pipe in (self._info, self._block):
            for fd in pipe or ():
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._info = self._block = None
        shutil.rmtree(self.runtime, ignore_errors=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction of a relay; its end is passed on as a half-close, so the other direction can
    still finish (an HTTP client may close its side before the answer has streamed)."""
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


def _loopback(host: str) -> str | None:
    """The address itself for a loopback literal or ``localhost``; None for a named host."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_loopback:
        # A non-loopback literal cannot be made to route inside the namespace; refuse it loudly.
        raise SandboxUnavailable(f"{host} is an address literal; name the host or use a loopback address")
    return host


def _listen(address: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def _in_netns(netns: int, make: Callable[[], T]) -> T:
    """Run ``make`` on a thread that joined ``netns`` and then ends, so no pooled thread (nor the
    event loop's) is ever left in a tenant's namespace; sockets keep the namespace they were made in."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]  # no error means make() returned: result is a T

    def run() -> None:
        try:
            if _libc.setns(netns, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the sandbox's network namespace failed")
            loop.call_soon_threadsafe(settle, make(), None)
        except BaseException as exc:
            # Handed to the awaiting task, which raises it.
            loop.call_soon_threadsafe(settle, None, exc)

    threading.Thread(target=run, name="sandbox-netns", daemon=True).start()
    return await done


def _read_info(fd: int) -> dict[str, int]:
    """bwrap's JSON about the sandbox (``child-pid``), written before it blocks on its block fd."""
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        with contextlib.suppress(ValueError):
            return dict(json.loads(data))
    raise SandboxUnavailable(f"bwrap exited before setting up the sandbox: {data.decode(errors='replace')}")


def _workspace_roots(writable: tuple[Path, ...]) -> list[Path]:
    """Read-only mounts that contain a writable path (the repo holding the dev workspace root)."""
    return sorted(
        {
            ro / path.relative_to(ro).parts[0]
            for path in writable
            for ro in _code_paths()
            if path.is_relative_to(ro) and path != ro
        }
    )


def visible(path: Path) -> bool:
    """Whether ``path`` exists (read-only) inside every sandbox."""
    return path.is_relative_to("/usr") or any(path.is_relative_to(p) for p in _code_paths())


@lru_cache(maxsize=1)
def _code_paths() -> tuple[Path, ...]:
    """The interpreter and the repo (its agent CLIs in node_modules, possibly a symlink elsewhere)."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), REPO}
    node_modules = REPO / "node_modules"
    if node_modules.exists():
        paths.add(node_modules.resolve())
    # Anything under /usr is visible already; nested paths would only stack the same mount twice.
    kept = [p for p in paths if not p.is_relative_to("/usr")]
    return tuple(sorted(p for p in kept if not any(p != q and p.is_relative_to(q) for q in kept)))


def give_to(path: Path, uid: int) -> None:
    """Hand a workspace tree to its sandbox's uid (blocking: run it in a thread)."""
    os.lchown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(root, name), uid, uid)


def required(settings: Settings) -> bool:
    """Whether tenant processes are sandboxed; raises SandboxUnavailable where they must be and cannot
    (fail closed). Only development runs unconfined, and says so loudly every time."""
    if settings.sandbox == "none":
        log.warning("AGENTAPI_SANDBOX=none: tenant processes run UNCONFINED (development only)")
        return False
    problem = probe()
    if problem is None:
        return True
    if settings.environment == "development":
        log.warning("the sandbox is unavailable (%s): tenant processes run UNCONFINED", problem)
        return False
    raise SandboxUnavailable(f"the sandbox cannot be set up: {problem}")


def forwarded_endpoints(
    urls: list[str],
    settings: Settings,
    local_ports: set[int] | frozenset[int] = frozenset(),
    tenant_urls: tuple[str, ...] = (),
) -> tuple[Endpoint, ...]:
    """The endpoints of ``urls`` (the platform's) and ``tenant_urls`` (checked at each connection) a
    sandbox gets forwarded, minus loopback ports served inside the session itself (its router). The
    platform's own Redis and PostgreSQL are refused outright: a tenant-set URL naming them must not
    become a way in. A host and port named by both is a tenant's: the check is not skipped for it."""
    platform = {
        (ep.host, ep.port)
        for url in (settings.redis_url, settings.database_url or "")
        if (ep := _service_endpoint(url)) is not None
    }
    found: dict[tuple[str, int], Endpoint] = {}
    for url, tenant in [(url, False) for url in urls] + [(url, True) for url in tenant_urls]:
        endpoint = endpoint_of(url, tenant)
        if endpoint is None:
            continue
        loopback = _loopback(endpoint.host) is not None
        if loopback and endpoint.port in local_ports:
            continue
        if (endpoint.host, endpoint.port) in platform or (
            loopback and any(port == endpoint.port for host, port in platform if _loopback(host))
        ):
            raise SandboxUnavailable(f"{url} points at the platform's Redis or PostgreSQL")
        found[(endpoint.host, endpoint.port)] = endpoint
    return tuple(found.values())


def _service_endpoint(url: str) -> Endpoint | None:
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.split("+")[0], 0)
    except ValueError:
        return None
    return Endpoint(parts.hostname, port) if parts.hostname else None


def remove_files_holding(root: Path, secrets: list[str]) -> int:
    """Delete every file under ``root`` that contains one of ``secrets`` (a session's gateway token,
    its router access key), wherever the CLI copied it; returns how many (blocking: use a thread)."""
    needles = [s.encode() for s in secrets if s]
    removed = 0
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                if os.path.islink(path) or os.path.getsize(path) > SECRET_SCAN_BYTES:
                    continue
                with open(path, "rb") as handle:
                    content = handle.read()
                if any(needle in content for needle in needles):
                    os.unlink(path)
                    removed += 1
    return removed
