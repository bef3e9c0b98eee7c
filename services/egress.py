"""Where MCP servers may be: endpoint URLs (SSRF rules) and stdio commands (allowlist, no shell).

The ingress checks a configuration when it is saved; the tools worker checks the endpoint again
right before it connects, so a name that resolved to a public address at save time and to an
internal one later (DNS rebinding) is still refused, and then connects to the addresses it checked
(``services/pinned_network.py``), not to whatever a second lookup of the name answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from schemas.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services, refused even if a network allowlist would cover them.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}
# Shell metacharacters have no meaning without a shell; refusing them catches configurations
# written for one (and arguments smuggling a second command) before they confuse anyone.
SHELL_CHARACTERS = re.compile(r"[;|&`$<>\n\r]|\$\(")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Variables that change how a program loads code; a tenant must not set them for a server we run.
FORBIDDEN_ENV = {"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "PYTHONPATH",
                 "PYTHONSTARTUP", "NODE_OPTIONS", "PATH", "HOME", "BASH_ENV", "ENV"}  # fmt: skip
# Interpreter options that run code given on the command line instead of an installed server.
CODE_FLAGS = {"-c", "-e", "-m", "-p", "-r", "-i", "--eval", "--print", "--require", "--import",
              "--loader", "--experimental-loader", "--call", "--command", "--exec", "--interactive"}  # fmt: skip
SHORT_CODE_FLAG = re.compile(r"^-[A-Za-z]{0,3}[cemp]([^A-Za-z-]|$)|^-[cem]\S")


@dataclass(frozen=True)
class EgressRefused(ValueError):
    """A configuration field that points somewhere the platform will not go."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _allowlisted(host: str, addresses: list[IPAddress], settings: Settings) -> bool:
    for entry in settings.mcp_egress_allowlist:
        if entry.lower() == host.lower():
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if addresses and all(address in network for address in addresses):
            return True
    return False


# NAT64 prefixes (RFC 6052 well-known, RFC 8215 local-use): the last 32 bits are an IPv4 address
# that a translator on the path would connect to.
NAT64_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches through a transition mechanism (mapped, 6to4,
    Teredo, NAT64): each must pass the same checks, or ``2002:a9fe:a9fe::`` reaches the metadata
    service."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo:
        found.extend(address.teredo)
    if any(address in network for network in NAT64_NETWORKS):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _reaches_metadata(addresses: list[IPAddress]) -> bool:
    return any(a in METADATA_ADDRESSES for address in addresses for a in (address, *embedded_ipv4(address)))


def _all_loopback(addresses: list[IPAddress]) -> bool:
    return bool(addresses) and all(
        (a.ipv4_mapped or a).is_loopback if isinstance(a, ipaddress.IPv6Address) else a.is_loopback
        for a in addresses
    )


def _refusal(address: IPAddress) -> str | None:
    for inner in embedded_ipv4(address):
        reason = _refusal(inner)
        if reason:
            return f"{reason} (embedded in {address})"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private or address.is_reserved or address.is_multicast or address.is_unspecified:
        return "a private or reserved address"
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"):
        return "a carrier-grade NAT address"
    return None


async def resolve(host: str, port: int, field: str = "endpoint_url") -> list[IPAddress]:
    """The addresses ``host`` resolves to (through the system's resolver)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EgressRefused(field, f"host {host!r} does not resolve ({exc.strerror})") from exc
    return sorted({ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}, key=str)


Resolver = Callable[[str, int, str], Awaitable[list[IPAddress]]]


async def check_endpoint(
    url: str, settings: Settings, field: str = "endpoint_url", resolver: Resolver = resolve
) -> list[IPAddress]:
    """Refuse URLs the platform must not connect to (raises EgressRefused naming the reason); the
    addresses checked, which a connection must then be pinned to."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EgressRefused(field, "must be an absolute https:// URL")
    if parts.username or parts.password:
        raise EgressRefused(field, "must not carry credentials; use the auth settings instead")
    host = parts.hostname.rstrip(".").lower()
    if host in METADATA_HOSTS:
        raise EgressRefused(field, f"{host} is a cloud metadata service")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise EgressRefused(field, "has an invalid port") from exc
    addresses = await resolver(host, port, field)
    if _reaches_metadata(addresses):
        raise EgressRefused(field, f"{host} resolves to a cloud metadata address")
    loopback = _all_loopback(addresses)
    if parts.scheme == "http" and not (settings.mcp_allow_insecure_http and loopback):
        raise EgressRefused(
            field,
            "must use https (plain http is accepted only for loopback hosts with"
            " AGENTAPI_MCP_ALLOW_INSECURE_HTTP on)",
        )
    if not (loopback and settings.mcp_allow_insecure_http):
        _check_addresses(host, addresses, settings, field)
    return addresses


def _check_addresses(host: str, addresses: list[IPAddress], settings: Settings, field: str) -> None:
    if _allowlisted(host, addresses, settings):
        return
    for address in addresses:
        reason = _refusal(address)
        if reason:
            shown = host if host == str(address) else f"{host} resolves to {address}, which is"
            raise EgressRefused(
                field,
                f"{shown} {reason}; add it to AGENTAPI_MCP_EGRESS_ALLOWLIST if it is meant to be reached",
            )


BROKER_SCHEMES = {"amqp": 5672, "amqps": 5671, "redis": 6379, "sqs": 443}


async def check_broker_url(
    url: str, settings: Settings, field: str = "broker_url", resolver: Resolver = resolve
) -> list[IPAddress]:
    """An event sink's broker: a kombu URL of a known transport whose host passes the same SSRF rules
    as MCP endpoints, except that loopback is accepted outside production (a developer's or a test's
    own broker). Credentials belong in the URL here; it is sealed like any other secret. Returns the
    addresses checked, which a connection must then be pinned to (none for sqs://, whose endpoint is
    AWS's, not a name the tenant chose)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(field, "is not a valid URL (check the port)") from exc
    if parts.scheme not in BROKER_SCHEMES:
        raise EgressRefused(field, f"must be one of {', '.join(f'{s}://' for s in BROKER_SCHEMES)}")
    if parts.query or parts.fragment:
        raise EgressRefused(field, "must not carry query options or a fragment")
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme == "sqs":
        # kombu's SQS transport takes only credentials from the URL; the endpoint is AWS's.
        if host:
            raise EgressRefused(field, "sqs:// takes credentials only: sqs://KEY:SECRET@")
        return []
    if not host:
        raise EgressRefused(field, "must name a host")
    if host in METADATA_HOSTS:
        raise EgressRefused(field, f"{host} is a cloud metadata service")
    addresses = await resolver(host, port or BROKER_SCHEMES[parts.scheme], field)
    if _reaches_metadata(addresses):
        raise EgressRefused(field, f"{host} resolves to a cloud metadata address")
    if not (_all_loopback(addresses) and settings.environment != "production"):
        _check_addresses(host, addresses, settings, field)
    return addresses


def check_stdio(command: str, args: list[str], env: dict[str, str], settings: Settings) -> None:
    """A stdio server runs an allowlisted argv prefix directly (no shell), with plain arguments that
    cannot turn the program into an interpreter of their own code, and allowlisted variables."""
    if SHELL_CHARACTERS.search(command) or " " in command.strip():
        raise EgressRefused(
            "command", "must be a single program name or path, without arguments or shell syntax"
        )
    for index, arg in enumerate(args):
        if SHELL_CHARACTERS.search(arg):
            raise EgressRefused(
                f"args[{index}]", "must not contain shell metacharacters (; | & ` $ < > newline)"
            )
    argv = [command, *args]
    # Exact matches only: an allowlisted name must not admit a same-named program from another path.
    prefixes = [[entry] if isinstance(entry, str) else entry for entry in settings.mcp_stdio_allowlist]
    matching = [len(p) for p in prefixes if p and argv[: len(p)] == p]
    if not matching:
        if not any(p and p[0] == command for p in prefixes):
            raise EgressRefused("command", f"{command!r} is not on this platform's stdio allowlist")
        raise EgressRefused(
            "args", "do not start with an argument list this platform's stdio allowlist names"
        )
    for index in range(max(matching) - 1, len(args)):
        if code_flag(args[index]):
            raise EgressRefused(
                f"args[{index}]",
                f"{args[index]!r} makes the program run code given inline; allowlist the exact server"
                " command instead",
            )
    for key in env:
        if not ENV_KEY.match(key):
            raise EgressRefused(f"env.{key}", "must be a variable name (letters, digits, underscore)")
        if key.upper() in FORBIDDEN_ENV or key not in settings.mcp_stdio_env_allowlist:
            raise EgressRefused(
                f"env.{key}", "may not be set for an MCP server (not on AGENTAPI_MCP_STDIO_ENV_ALLOWLIST)"
            )


def code_flag(arg: str) -> bool:
    """Whether an argument asks an interpreter to run code or a module named inline (python -c/-m,
    node -e/-p/--require/--import, sh -c, npx -c ...), alone, with ``=value`` or attached (-cCODE)."""
    name = arg.split("=", 1)[0]
    if name in CODE_FLAGS:
        return True
    # Short options cluster and take an attached value: -Ic, -Bm, -cprint(1).
    return bool(SHORT_CODE_FLAG.match(arg))
