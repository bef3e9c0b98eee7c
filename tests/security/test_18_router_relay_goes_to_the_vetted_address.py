"""Finding 18: a Claude Code Router's upstream providers are a tenant's URLs, vetted when the settings
were saved, but the sandbox's relay connected to a fresh lookup of the name: a provider name answering
a public address to the check and a private one later (DNS rebinding, or a record changed since
saving) let the router reach the platform's network. Each relayed connection to a tenant's endpoint
now runs the egress check and goes to the addresses it vetted; the platform's own endpoints (which
may be private by design) are forwarded as configured.

The name service is the check's injectable resolver for ``localhost``, whose lookup by the system
(what the relay did) answers 127.0.0.1. A server listens on 127.0.0.1 (internal) and on 127.0.0.2
(vetted, on the check's allowlist) at the same port, answering its own name; a program in the
sandbox connects through the forward three times."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from schemas.settings import Settings
from services.egress import IPAddress, check_endpoint
from services.sandbox_probe import probe
from workers.sandbox import Endpoint, Sandbox, give_to, sandbox_uid

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(probe() is not None, reason=f"no sandbox here: {probe()}"),
]

VETTED, INTERNAL = ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")
SETTINGS = Settings(  # type: ignore[call-arg]
    _env_file=None, environment="test", jwt_secret="x" * 32, mcp_egress_allowlist=["127.0.0.2/32"]
)
PROGRAM = """
import json, socket
answers = []
for _ in range(3):
    try:
        with socket.create_connection(("127.0.0.1", %d), timeout=5) as s:
            answers.append(s.recv(64).decode())
    except OSError as exc:
        answers.append(type(exc).__name__)
print(json.dumps(answers))
"""


class Resolver:
    """Answers ``answers`` in turn, then the last one again."""

    def __init__(self, *answers: IPAddress) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int, field: str) -> list[IPAddress]:
        self.lookups.append(host)
        return [self.answers[min(len(self.lookups), len(self.answers)) - 1]]


@asynccontextmanager
async def servers() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """A port on which 127.0.0.2 answers ``vetted`` and 127.0.0.1 ``internal``; connections per name."""
    calls = {"vetted": 0, "internal": 0}

    def answering(name: str):  # type: ignore[no-untyped-def]
        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            calls[name] += 1
            writer.write(name.encode())
            await writer.drain()
            writer.close()

        return reply

    for _ in range(20):
        vetted = await asyncio.start_server(answering("vetted"), str(VETTED), 0)
        port = vetted.sockets[0].getsockname()[1]
        try:
            internal = await asyncio.start_server(answering("internal"), str(INTERNAL), port)
        except OSError:
            vetted.close()
            continue
        try:
            yield port, calls
        finally:
            vetted.close()
            internal.close()
        return
    raise RuntimeError("no port free on both addresses")


async def run_in_sandbox(tmp_path: Path, endpoint: Endpoint, resolver: Resolver) -> list[str]:
    workspace = tmp_path / "ws"
    workspace.mkdir(mode=0o700)
    uid = sandbox_uid("relay-pin", "ccr")
    give_to(workspace, uid)
    sandbox = Sandbox(
        "ccr",
        uid,
        tmp_path / "etc",
        (workspace,),
        endpoints=(endpoint,),
        settings=SETTINGS,
        resolver=resolver,
    )
    argv = sandbox.wrap([sys.executable, "-c", PROGRAM % endpoint.port], workspace)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workspace,
        stdout=asyncio.subprocess.PIPE,
        pass_fds=sandbox.pass_fds,
        env={"PATH": "/usr/bin"},
    )
    try:
        await sandbox.attach()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await sandbox.close()
    return list(json.loads(out))


async def test_a_providers_connections_go_to_the_address_its_check_vetted(tmp_path: Path) -> None:
    async with servers() as (port, calls):
        resolver = Resolver(VETTED)
        answers = await run_in_sandbox(tmp_path, Endpoint("localhost", port, "https"), resolver)
    assert answers == ["vetted"] * 3
    assert resolver.lookups == ["localhost"] * 3, "one check per connection"
    assert calls == {"vetted": 3, "internal": 0}


async def test_a_provider_name_now_answering_a_private_address_is_not_reached(tmp_path: Path) -> None:
    async with servers() as (port, calls):
        resolver = Resolver(VETTED, INTERNAL)
        url = f"https://localhost:{port}/v1/chat/completions"
        # The settings were saved while the name answered an allowed address.
        assert await check_endpoint(url, SETTINGS, "api_base_url", resolver) == [VETTED]
        answers = await run_in_sandbox(tmp_path, Endpoint("localhost", port, "https"), resolver)
    assert answers == [""] * 3, "each connection closed unanswered"
    assert resolver.lookups == ["localhost"] * 4
    assert calls == {"vetted": 0, "internal": 0}


async def test_the_platforms_own_endpoint_is_forwarded_as_configured(tmp_path: Path) -> None:
    async with servers() as (port, calls):
        resolver = Resolver(VETTED)
        answers = await run_in_sandbox(tmp_path, Endpoint("localhost", port), resolver)
    assert answers == ["internal"] * 3, "private by design, reached by the system's lookup"
    assert resolver.lookups == []
    assert calls == {"vetted": 0, "internal": 3}
