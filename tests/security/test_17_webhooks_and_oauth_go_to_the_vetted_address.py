"""Finding 17: finding 16's hole in two more clients of tenant-named URLs. Webhook delivery and the
MCP OAuth client (discovery of a tenant-named authorization server, its token endpoint) checked a
URL's name, then let the HTTP client resolve it again to connect, so a name answering a public
address to the check and an internal one next (DNS rebinding) reached the internal one. Both now
connect to the addresses the check vetted, with the Host header, TLS server name and certificate
still the name's.

As in finding 16, the check's injectable resolver plays a rebinding DNS server for ``localhost``
(127.0.0.2 first, 127.0.0.1 after), the system's resolver answers 127.0.0.1, and a server listens on
each address, on the same port, answering with its own name."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from schemas.settings import Settings
from services.mcp.oauth_client import ClientInfo, discover, exchange_code, http_client, refresh
from tests.security.test_16_connections_go_to_the_vetted_address import (
    INTERNAL,
    VETTED,
    RebindingResolver,
    certificate_for_localhost,
)
from workers.webhook_post import post_delivery

pytestmark = pytest.mark.timeout(60)


class NamedServer(ThreadingHTTPServer):
    """A webhook target and OAuth authorization server in one, saying who it is in its answers."""

    daemon_threads = True

    def __init__(self, host: str, port: int, name: str, tls: ssl.SSLContext | None) -> None:
        super().__init__((host, port), _Handler)
        self.name, self.scheme = name, "https" if tls else "http"
        # (method, Host header, path) of every request, and the TLS server names asked for.
        self.requests: list[tuple[str, str, str]] = []
        self.server_names: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: NamedServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._record()
        issuer = f"{self.server.scheme}://{self.headers['Host']}"
        if self.path != "/.well-known/oauth-authorization-server":
            self._answer(404, {})
            return
        self._answer(
            200,
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "code_challenge_methods_supported": ["S256"],
                "service_documentation": f"served by {self.server.name}",
            },
        )

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._record()
        token = {"access_token": f"token from {self.server.name}", "token_type": "Bearer", "expires_in": 60}
        self._answer(200, token if self.path == "/token" else {"received_by": self.server.name})

    def _record(self) -> None:
        self.server.requests.append((self.command, self.headers.get("Host", ""), self.path))

    def _answer(self, status: int, document: dict[str, object]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def named_servers(
    tls: Callable[[], ssl.SSLContext] | None = None,
) -> Iterator[tuple[NamedServer, NamedServer]]:
    """(vetted on 127.0.0.2, internal on 127.0.0.1), on one port; ``tls``: each server's context."""
    with ExitStack() as stack:
        servers = []
        for address, name in ((VETTED, "vetted"), (INTERNAL, "internal")):
            port = servers[0].port if servers else 0
            server = NamedServer(str(address), port, name, tls() if tls else None)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
            servers.append(server)
        yield servers[0], servers[1]


def settings(**overrides: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, environment="test", jwt_secret="x" * 32, **overrides
    )


INSECURE = {"mcp_allow_insecure_http": True}


async def test_a_webhook_delivery_goes_to_the_vetted_address() -> None:
    with named_servers() as (vetted, internal):
        url = f"http://localhost:{vetted.port}/hook"
        resolvers = [RebindingResolver() for _ in range(3)]
        for resolver in resolvers:
            # One delivery attempt each (a retry checks the name again).
            assert await post_delivery(url, b"{}", {}, settings(**INSECURE), resolver) == 200
    assert all(resolver.lookups == ["localhost"] for resolver in resolvers)
    assert vetted.requests == [("POST", f"localhost:{vetted.port}", "/hook")] * 3
    assert internal.requests == []


async def test_a_webhook_delivery_over_tls_keeps_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, server_tls = certificate_for_localhost(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    with named_servers(server_tls) as (vetted, internal):
        # https, no insecure mode: the check admits 127.0.0.2 by the allowlist and would refuse 127.0.0.1.
        allowed = settings(mcp_egress_allowlist=["127.0.0.2/32"])
        url = f"https://localhost:{vetted.port}/hook"
        assert await post_delivery(url, b"{}", {}, allowed, RebindingResolver()) == 200
    assert set(vetted.server_names) == {"localhost"}
    assert vetted.requests == [("POST", f"localhost:{vetted.port}", "/hook")]
    assert internal.requests == []


async def test_oauth_discovery_and_token_calls_go_to_the_vetted_address() -> None:
    with named_servers() as (vetted, internal):
        issuer = f"http://localhost:{vetted.port}"
        insecure = settings(**INSECURE)
        discovery = RebindingResolver()
        async with http_client(insecure, discovery) as http:
            _, server, _ = await discover(http, f"{issuer}/mcp", {"authorization_server": issuer})
        assert server.token_endpoint == f"{issuer}/token"
        client = ClientInfo(
            issuer=issuer,
            authorization_endpoint=server.authorization_endpoint,
            token_endpoint=server.token_endpoint,
            revocation_endpoint=None,
            client_id="agentapi",
            token_endpoint_auth_method="none",
            resource=f"{issuer}/mcp",
            scope=None,
        )
        exchange, renewal = RebindingResolver(), RebindingResolver()
        token = await exchange_code(
            client, None, "https://app.example/cb", "code", "v" * 64, insecure, exchange
        )
        renewed = await refresh(client, None, "refresh", insecure, renewal)
    assert token["access_token"] == renewed["access_token"] == "token from vetted"
    # Discovery looked the name up once, for the issuer and every endpoint on its origin.
    assert discovery.lookups == exchange.lookups == renewal.lookups == ["localhost"]
    host = f"localhost:{vetted.port}"
    assert vetted.requests == [
        ("GET", host, "/.well-known/oauth-authorization-server"),
        ("POST", host, "/token"),
        ("POST", host, "/token"),
    ]
    assert internal.requests == []
