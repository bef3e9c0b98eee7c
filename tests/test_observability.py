"""Logs never carry credentials; Sentry receives errors when a DSN is set, scrubbed the same way."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from events.redaction import _SECRET_PATTERNS, SHORTEST_SECRET, redact
from services.observability import CorrelationFilter, JsonFormatter, RedactingFilter, correlation_id

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET /x Authorization: Bearer abcdef123456789", "abcdef123456789"),
        (f"token={JWT} rest", JWT),
        ("provider key sk-ant-api03-abcdefghijklmnop used", "sk-ant-api03-abcdefghijklmnop"),
        ('{"api_key": "hunter2hunter2", "name": "x"}', "hunter2hunter2"),
        ("client_secret=s3cr3tvalue&grant_type=refresh_token", "s3cr3tvalue"),
        ("password: correct-horse", "correct-horse"),
    ],
)
def test_redact_removes_credentials(line: str, secret: str) -> None:
    cleaned = redact(line)
    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_text_shorter_than_any_secret_pattern_matches_is_left_alone_unread() -> None:
    """``redact`` skips the patterns for text shorter than ``SHORTEST_SECRET``: no pattern may match
    anything that short (a new, shorter pattern must lower it)."""
    from re import _parser  # type: ignore[attr-defined]  # the parser's own minimum width of a pattern

    shortest = min(_parser.parse(p.pattern, p.flags).getwidth()[0] for p in _SECRET_PATTERNS)
    assert shortest == SHORTEST_SECRET
    assert redact("token:abc") == "token:abc" and redact("token:abcd") == "token:[redacted]"


def test_redact_leaves_ordinary_text_alone() -> None:
    line = "session 0193 ended with reason idle_timeout after 3 messages"
    assert redact(line) == line


def test_filter_rewrites_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction")
    handler = caplog.handler
    handler.addFilter(RedactingFilter())
    try:
        try:
            raise RuntimeError(f"upstream refused Bearer {JWT}")
        except RuntimeError:
            logger.exception("calling %s with %s", "https://mcp.example", f"Authorization: Bearer {JWT}")
    finally:
        handler.removeFilter(handler.filters[-1])
    text = caplog.text
    assert "calling https://mcp.example" in text
    assert JWT not in text
    assert "RuntimeError" in text


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


def test_json_lines_carry_the_correlation_id_and_no_secret() -> None:
    record = logging.LogRecord(
        "workers.x", logging.ERROR, __file__, 1, "calling with %s", (f"Bearer {JWT}",), None
    )
    try:
        raise ValueError(f"token={JWT}")
    except ValueError:
        record.exc_info = sys.exc_info()
    token = correlation_id.set("corr-42")
    try:
        for kind in (CorrelationFilter, RedactingFilter):
            assert kind().filter(record)
    finally:
        correlation_id.reset(token)
    line = JsonFormatter("worker").format(record)
    entry = json.loads(line)
    assert entry["correlation_id"] == "corr-42"
    assert (entry["level"], entry["logger"], entry["component"]) == ("ERROR", "workers.x", "worker")
    assert entry["message"] == "calling with Bearer [redacted]"
    assert "ValueError" in entry["exception"] and JWT not in line
    assert "\n" not in line


@pytest.fixture
def sentry_server() -> Iterator[tuple[str, list[bytes]]]:
    _Collector.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://publickey@127.0.0.1:{server.server_port}/42", _Collector.bodies
    server.shutdown()


def test_errors_reach_sentry_without_secrets(sentry_server: tuple[str, list[bytes]]) -> None:
    dsn, bodies = sentry_server
    script = textwrap.dedent(
        f"""
        import logging, sentry_sdk
        from schemas.settings import Settings
        from services.observability import configure_process
        settings = Settings(_env_file=None, environment="test", jwt_secret="x" * 32, sentry_dsn={dsn!r})
        configure_process(settings, "worker")
        try:
            raise ValueError("refused Bearer {JWT}")
        except ValueError:
            logging.getLogger("agentapi.test").exception("tool call failed with Bearer {JWT}")
        sentry_sdk.flush(5)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert JWT not in result.stderr
    payload = b"".join(bodies).decode()
    assert "ValueError" in payload
    assert '"component":"worker"' in payload.replace(" ", "")
    assert JWT not in payload
