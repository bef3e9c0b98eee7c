"""Where MCP servers may live: SSRF rules for endpoints and the stdio allowlist (real DNS lookups)."""

from __future__ import annotations

import pytest

from schemas.settings import Settings
from services.egress import EgressRefused, check_endpoint, check_stdio


def settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, environment="test", jwt_secret="x" * 32, **overrides)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.216.34/mcp", "must use https"),
        ("https://10.1.2.3/mcp", "private"),
        ("https://192.168.0.10/mcp", "private"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://[::1]/mcp", "loopback"),
        ("https://127.0.0.1:8443/mcp", "loopback"),
        ("https://localhost/mcp", "localhost resolves to"),
        ("https://[fe80::1]/mcp", "link-local"),
        ("https://[::ffff:10.0.0.1]/mcp", "private"),
        ("https://100.64.1.1/mcp", "carrier-grade"),
        ("https://metadata.google.internal/computeMetadata", "metadata"),
        ("https://user:pw@93.184.216.34/mcp", "credentials"),
        ("ftp://93.184.216.34/mcp", "https://"),
        ("https://no-such-host.invalid/mcp", "does not resolve"),
    ],
)
async def test_refused_endpoints(url: str, reason: str) -> None:
    with pytest.raises(EgressRefused, match=reason) as refused:
        await check_endpoint(url, settings())
    assert refused.value.field == "endpoint_url"


async def test_public_https_is_accepted() -> None:
    await check_endpoint("https://93.184.216.34/mcp", settings())


async def test_insecure_mode_admits_plain_http_to_loopback_only() -> None:
    insecure = settings(mcp_allow_insecure_http=True)
    await check_endpoint("http://127.0.0.1:9000/mcp", insecure)
    await check_endpoint("http://localhost:9000/mcp", insecure)
    with pytest.raises(EgressRefused, match="must use https"):
        await check_endpoint("http://93.184.216.34/mcp", insecure)
    with pytest.raises(EgressRefused, match="metadata"):
        await check_endpoint("http://169.254.169.254/", insecure)


async def test_allowlisted_networks_and_hosts_are_reachable_but_metadata_never() -> None:
    allowed = settings(mcp_egress_allowlist=["10.0.0.0/8", "localhost", "169.254.0.0/16"])
    await check_endpoint("https://10.9.8.7/mcp", allowed)
    await check_endpoint("https://localhost/mcp", allowed)
    with pytest.raises(EgressRefused, match="metadata"):
        await check_endpoint("https://169.254.169.254/", allowed)


@pytest.mark.parametrize(
    ("command", "args", "env", "field"),
    [
        ("/usr/bin/curl", [], {}, "command"),
        ("python3; rm -rf /", [], {}, "command"),
        ("python3 -c", [], {}, "command"),
        ("/tmp/evil/python3", [], {}, "command"),
        ("python3", ["-m", "server; curl evil"], {}, "args[1]"),
        ("python3", ["a | b"], {}, "args[0]"),
        ("python3", ["$(id)"], {}, "args[0]"),
        ("python3", ["`id`"], {}, "args[0]"),
        ("python3", [], {"LD_PRELOAD": "/tmp/x.so"}, "env.LD_PRELOAD"),
        ("python3", [], {"BAD-NAME": "1"}, "env.BAD-NAME"),
    ],
)
def test_refused_stdio_servers(command: str, args: list[str], env: dict[str, str], field: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        check_stdio(command, args, env, settings(mcp_stdio_allowlist=["python3"]))
    assert refused.value.field == field


def test_allowlisted_stdio_server_is_accepted() -> None:
    check_stdio(
        "python3",
        ["-m", "server", "--flag=value"],
        {"API_URL": "https://x"},
        settings(mcp_stdio_allowlist=[["python3", "-m", "server"]], mcp_stdio_env_allowlist=["API_URL"]),
    )


@pytest.mark.parametrize(
    ("args", "env", "field"),
    [
        (["-c", "print(open('/proc/1/environ').read())"], {}, "args[0]"),
        (["-cprint(1)"], {}, "args[0]"),
        (["-I", "-c", "print(1)"], {}, "args[1]"),
        (["-Ic", "print(1)"], {}, "args[0]"),
        (["-m", "http.server"], {}, "args[0]"),
        (["-m", "server", "--eval=1"], {}, "args[2]"),
        (["server.py"], {"PYTHONHOME": "/tmp"}, "env.PYTHONHOME"),
        (["server.py"], {"NODE_PATH": "/tmp"}, "env.NODE_PATH"),
        (["server.py"], {"GCONV_PATH": "/tmp"}, "env.GCONV_PATH"),
    ],
)
def test_code_flags_and_unlisted_variables_are_refused(
    args: list[str], env: dict[str, str], field: str
) -> None:
    """Interpreters on the allowlist do not run inline code, and only allowlisted variables pass."""
    allowed = settings(mcp_stdio_allowlist=["python3", ["python3", "-m", "server"]])
    with pytest.raises(EgressRefused) as refused:
        check_stdio("python3", args, env, allowed)
    assert refused.value.field == field


def test_an_argv_prefix_admits_only_itself() -> None:
    allowed = settings(mcp_stdio_allowlist=[["npx", "-y", "@modelcontextprotocol/server-filesystem"]])
    check_stdio("npx", ["-y", "@modelcontextprotocol/server-filesystem", "/data"], {}, allowed)
    with pytest.raises(EgressRefused) as refused:
        check_stdio("npx", ["-y", "some-other-package"], {}, allowed)
    assert refused.value.field == "args"
