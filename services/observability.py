"""Process set-up shared by the ingress and the workers: logging that never carries a secret, and Sentry."""

from __future__ import annotations

import atexit
import json
import logging
import queue
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from events.redaction import REDACTED, redact
from schemas.settings import Settings
from services import asyncio_compat

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"
# The correlation id of the work in hand: an HTTP request in the ingress, an event in a worker.
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
_listener: QueueListener | None = None
_SECRET_HEADERS = {"authorization", "cookie", "webhook-signature", "x-session-token"}


class CorrelationFilter(logging.Filter):
    """Stamps every record with the correlation id of the work it belongs to ("-" outside any)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get() or "-"
        return True


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message, including formatted arguments and tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; runs after the redacting filter."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "component": self.component,
            "correlation_id": getattr(record, "correlation_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings, component: str = "agentapi") -> None:
    """Root logging at the configured level, as JSON lines or text; every handler redacts credentials.

    Records are formatted in the thread that logs them (the correlation id is a context variable)
    and written to stderr by a listener thread, so a slow reader of the output never blocks the
    event loop. A root logger that already has handlers (a test runner's) keeps them.
    """
    global _listener
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    if not root.handlers:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        output = logging.StreamHandler()
        output.setFormatter(logging.Formatter("%(message)s"))
        _listener = QueueListener(records, output)
        _listener.start()
        atexit.register(_listener.stop)
        root.addHandler(QueueHandler(records))
    for handler in root.handlers:
        if isinstance(handler, QueueHandler):
            handler.setFormatter(
                JsonFormatter(component) if settings.log_format == "json" else logging.Formatter(LOG_FORMAT)
            )
        for kind in (CorrelationFilter, RedactingFilter):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            key: REDACTED if isinstance(key, str) and key.lower() in _SECRET_HEADERS else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def _scrub_event(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    """Every string of the event (messages, exception values, breadcrumbs, headers) redacted."""
    scrubbed: dict[str, Any] = _scrub(event)
    return scrubbed


def init_sentry(settings: Settings, component: str) -> bool:
    """Initialise sentry-sdk when a DSN is set; returns whether it did."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations import Integration
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration
    from sentry_sdk.integrations.litestar import LitestarIntegration

    integrations: list[Integration] = [
        LitestarIntegration() if component == "ingress" else DramatiqIntegration()
    ]
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        integrations=integrations,
        environment=settings.environment,
        server_name=component,
        send_default_pii=False,
        before_send=_scrub_event,  # type: ignore[arg-type]  # sentry types the event as its TypedDict; the scrubber walks it as plain data
        traces_sample_rate=0.0,
        # Frame locals hold tokens and decrypted keys; a stack trace is enough to debug.
        include_local_variables=False,
    )
    sentry_sdk.set_tag("component", component)
    return True


def configure_process(settings: Settings, component: str) -> None:
    asyncio_compat.install()
    configure_logging(settings, component)
    init_sentry(settings, component)
