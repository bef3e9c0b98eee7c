"""Finding 19: an event sink's broker URL was egress-checked before each publish, then kombu resolved
its host again to connect, so a name answering an allowed address to the check and another one next
(DNS rebinding) sent the organization's events, and the broker credentials, elsewhere. Publishes
now connect to the addresses the check vetted; over amqps the name stays the TLS server name, and
it is now checked against the broker's certificate (py-amqp checked no name before).

As in finding 16, the check's injectable resolver answers 127.0.0.2 for ``localhost`` while the
system's lookup answers 127.0.0.1, with a server on each address at the same port."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from events.sinks import Outgoing, PublishFailed, publish
from schemas.settings import Settings
from services.egress import check_broker_url
from tests.security.test_16_connections_go_to_the_vetted_address import (
    INTERNAL,
    VETTED,
    RebindingResolver,
    certificate_for_localhost,
)

pytestmark = pytest.mark.timeout(60)

SETTINGS = Settings(_env_file=None, environment="test", jwt_secret="x" * 32)  # type: ignore[call-arg]


def port_free_on_both() -> int:
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind((str(VETTED), 0))
            port = int(first.getsockname()[1])
            try:
                second.bind((str(INTERNAL), port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free on both addresses")


@contextmanager
def redis_servers() -> Iterator[tuple[int, redis.Redis, redis.Redis]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = port_free_on_both()
    processes = [
        subprocess.Popen(
            [binary, "--bind", str(address), "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        for address in (VETTED, INTERNAL)
    ]
    clients = [redis.Redis(host=str(address), port=port) for address in (VETTED, INTERNAL)]
    try:
        for client in clients:
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    threading.Event().wait(0.05)
        yield port, clients[0], clients[1]
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.terminate()
            process.wait(10)


async def test_a_sinks_events_go_to_the_broker_at_the_vetted_address() -> None:
    with redis_servers() as (port, vetted, internal):
        resolver = RebindingResolver()
        url = f"redis://localhost:{port}/0"
        for n in range(2):
            addresses = [str(a) for a in await check_broker_url(url, SETTINGS, resolver=resolver)]
            message = Outgoing(f"event-{n}", "agentapi.events", b"{}")
            await asyncio.to_thread(publish, "sink-19", url, "", [message], 10, addresses)
        assert resolver.lookups == ["localhost", "localhost"]
        # Each publish went where its own check looked: 127.0.0.2 first, then (the name rebound,
        # still loopback and allowed outside production) a new pool to 127.0.0.1, never the first's.
        assert addresses == [str(INTERNAL)]
        assert vetted.llen("agentapi.events") == 1
        assert internal.llen("agentapi.events") == 1


class TlsListener:
    """Accepts TLS connections (certificate for ``localhost``), records the server names asked for,
    then hangs up: enough to see where an amqps publish went and under which name."""

    def __init__(self, address: str, port: int, context: ssl.SSLContext) -> None:
        self.server_names: list[str | None] = []
        self.connections = 0
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        self.sock = socket.create_server((address, port))
        self.context = context
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                with self.context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()


async def test_amqps_goes_to_the_vetted_address_under_the_brokers_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, server_tls = certificate_for_localhost(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    port = port_free_on_both()
    vetted, internal = (
        TlsListener(str(VETTED), port, server_tls()),
        TlsListener(str(INTERNAL), port, server_tls()),
    )
    try:
        url = f"amqps://user:pw@localhost:{port}//"
        addresses = [str(a) for a in await check_broker_url(url, SETTINGS, resolver=RebindingResolver())]
        with pytest.raises(PublishFailed):
            await asyncio.to_thread(
                publish, "sink-19-tls", url, "", [Outgoing("e", "k", b"{}")], 5, addresses
            )
    finally:
        vetted.sock.close()
        internal.sock.close()
    assert vetted.connections >= 1 and set(vetted.server_names) == {"localhost"}
    assert internal.connections == 0
