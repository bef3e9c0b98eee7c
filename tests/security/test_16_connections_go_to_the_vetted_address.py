"""Finding 16: the tools worker's egress check resolved an MCP endpoint's name and vetted the
addresses, then its HTTP client resolved the name again to connect, so a name answering a public
address first and an internal one next (DNS rebinding) reached the internal one. Connections now go
to the addresses the check vetted; the Host header still names the host.

The name service is the check's injectable resolver, playing a rebinding DNS server for
``localhost``: 127.0.0.2 to the first lookup, 127.0.0.1 to any later one, which is also what the
system's resolver answers. A server listens on each address, on the same port: over Streamable
HTTP through the light client and through fastmcp's, over SSE (fastmcp's), and over TLS with a
certificate for the name only, where the egress check would have refused the second answer."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from schemas.settings import Settings
from services.egress import IPAddress
from tests.fixtures.mcp import mcp_server
from tests.security.hostile_http_mcp import HostileServer, hostile_server
from workers.mcp_client import ClientPool, HttpSession, ServerSpec

pytestmark = pytest.mark.timeout(60)

VETTED, INTERNAL = ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")


class RebindingResolver:
    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int, field: str) -> list[IPAddress]:
        self.lookups.append(host)
        return [VETTED if len(self.lookups) == 1 else INTERNAL]


@pytest.fixture(params=[True, False], ids=["light-client", "fastmcp-client"])
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[HostileServer, HostileServer]]:
    with ExitStack() as stack:
        vetted = stack.enter_context(hostile_server(str(VETTED), name="vetted", modern=request.param))
        internal = stack.enter_context(
            hostile_server(str(INTERNAL), vetted.port, name="internal", modern=request.param)
        )
        yield vetted, internal


def rebinding_pool() -> tuple[ClientPool, RebindingResolver]:
    resolver = RebindingResolver()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, environment="test", jwt_secret="x" * 32, mcp_allow_insecure_http=True
    )
    return ClientPool(settings, resolver), resolver


def localhost_spec(
    transport: str, port: int, path: str, token: str | None = None, scheme: str = "http"
) -> ServerSpec:
    # A lookup after the check's answers otherwise: the system's resolver says 127.0.0.1.
    assert {info[4][0] for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)} == {
        str(INTERNAL)
    }
    return ServerSpec(
        config_id=uuid.uuid4(),
        version=datetime(2026, 12, 2, tzinfo=UTC),
        transport=transport,
        endpoint_url=f"{scheme}://localhost:{port}{path}",
        command=None,
        args=(),
        env=(),
        token=token,
    )


async def test_the_connection_goes_to_the_vetted_address(
    servers: tuple[HostileServer, HostileServer],
) -> None:
    vetted, internal = servers
    port = vetted.port
    pool, resolver = rebinding_pool()
    spec = localhost_spec("http", port, "/mcp")
    try:
        for _ in range(3):
            result = await pool.call_tool(spec, "hello", {}, timeout=20)
            assert result["content"][0]["text"] == "hello from vetted"
        assert isinstance(pool._clients[spec.pool_key].client, HttpSession) is vetted.modern
    finally:
        await pool.close()
    assert resolver.lookups == ["localhost"]
    assert vetted.calls == [(f"localhost:{port}", "hello")] * 3
    assert internal.calls == []


async def test_an_sse_connection_goes_to_the_vetted_address() -> None:
    token = secrets.token_urlsafe(16)
    with mcp_server("sse", f"--token={token}", host=str(VETTED)) as url:
        port = int(urlsplit(url).port or 0)
        with hostile_server(str(INTERNAL), port, name="internal") as internal:
            pool, resolver = rebinding_pool()
            spec = localhost_spec("sse", port, "/sse", token)
            try:
                for n in range(3):
                    result = await pool.call_tool(spec, "echo", {"text": str(n)}, timeout=20)
                    assert str(n) in result["content"][0]["text"]
            finally:
                await pool.close()
    assert resolver.lookups == ["localhost"]
    assert internal.calls == []


def certificate_for_localhost(directory: Path) -> tuple[Path, Callable[[], ssl.SSLContext]]:
    """A CA's certificate file (for SSL_CERT_FILE), and server contexts with a certificate it signed
    for the name ``localhost`` only (not for an address)."""
    now = datetime.now(UTC)

    def issue(
        subject: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_file, chain, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(issue("test CA", ca_key, ca_key, True).public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(issue("localhost", key, ca_key, False).public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    def context() -> ssl.SSLContext:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(chain, key_file)
        return server

    return ca_file, context


@pytest.mark.parametrize("modern", [True, False], ids=["light-client", "fastmcp-client"])
async def test_tls_keeps_the_name_for_the_server_name_and_certificate(
    modern: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, server_tls = certificate_for_localhost(tmp_path)
    # Both clients' trust stores read it when they are made.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    with ExitStack() as stack:
        vetted = stack.enter_context(
            hostile_server(str(VETTED), name="vetted", modern=modern, tls=server_tls())
        )
        internal = stack.enter_context(
            hostile_server(str(INTERNAL), vetted.port, name="internal", modern=modern, tls=server_tls())
        )
        resolver = RebindingResolver()
        # https, no insecure mode: the check admits 127.0.0.2 by the allowlist and would refuse 127.0.0.1.
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, environment="test", jwt_secret="x" * 32, mcp_egress_allowlist=["127.0.0.2/32"]
        )
        pool = ClientPool(settings, resolver)
        spec = localhost_spec("http", vetted.port, "/mcp", scheme="https")
        try:
            result = await pool.call_tool(spec, "hello", {}, timeout=20)
        finally:
            await pool.close()
    assert result["content"][0]["text"] == "hello from vetted"
    assert set(vetted.server_names) == {"localhost"}
    assert vetted.calls == [(f"localhost:{vetted.port}", "hello")]
    assert internal.calls == []
