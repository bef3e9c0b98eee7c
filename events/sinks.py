"""Publishing events to a tenant's own message bus with kombu (AMQP, SQS, Redis).

One connection pool per sink and broker URL, messages in the order given, and on AMQP publisher
confirms: a batch counts as sent only once the broker has acknowledged it. The confirms are
awaited per batch, not per message (py-amqp's ``confirm_publish`` waits for each one, a round trip
per event: about 300 events/s here). Blocking I/O: callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import ssl
import string
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from amqp import spec
from kombu import Connection, Exchange, Producer
from kombu.connection import ConnectionPool

from events.cloudevents import CONTENT_TYPE

ROUTING_FIELDS = ("org_id", "type", "session_id", "user_id")
DEFAULT_ROUTING_KEY = "{org_id}.{type}"
POOL_LIMIT = 4
# AMQP exchange names: letters, digits, hyphen, underscore, period, colon (the broker's own rule).
EXCHANGE_CHARACTERS = set(string.ascii_letters + string.digits + "-_.:")


def check_routing_key(template: str) -> None:
    """Raises ValueError unless ``template`` only uses ``{org_id}``, ``{type}``, ``{session_id}``,
    ``{user_id}``, without conversions or format specs (so rendering cannot fail later)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"routing_key: {exc}") from exc
    for _, name, format_spec, conversion in parsed:
        if name is None:
            continue
        if name not in ROUTING_FIELDS or format_spec or conversion:
            raise ValueError(
                f"routing_key: {{{name}}} is not a placeholder; use {', '.join(f'{{{f}}}' for f in ROUTING_FIELDS)}"
            )


def check_exchange(name: str) -> None:
    if not set(name) <= EXCHANGE_CHARACTERS:
        raise ValueError("exchange: letters, digits, '-', '_', '.' and ':' only")


def routing_key(template: str, event: dict[str, Any]) -> str:
    """``event`` is a CloudEvent document; a missing session renders as ``-``."""
    return template.format(
        org_id=event.get("orgid", "-"),
        type=str(event["type"]).removeprefix("dev.agentapi."),
        session_id=event.get("subject", "-"),
        user_id=event.get("userid", "-"),
    )


def redacted(url: str) -> str:
    """The URL without its password, for answers and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    routing_key: str
    body: bytes


class PublishFailed(Exception):
    """The broker refused or could not be reached; ``sent`` messages before it were confirmed."""

    def __init__(self, sent: int, reason: str) -> None:
        super().__init__(reason)
        self.sent = sent
        self.reason = reason


class Nacked(Exception):
    """The broker refused a message it was asked to confirm."""


_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()


def _pool(sink_key: str, url: str, addresses: Sequence[str], timeout: float) -> ConnectionPool:
    # Keyed by sink, URL and vetted addresses, so a changed URL or DNS answer gets a new pool (whose
    # connections, reconnects included, go to what was vetted) and two sinks never share connections.
    pinned = ",".join(addresses)
    key = hashlib.sha256(f"{sink_key}\0{url}\0{pinned}".encode()).hexdigest()
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = _connection(url, addresses, timeout).Pool(limit=POOL_LIMIT)
        return pool


def _connection(url: str, addresses: Sequence[str], timeout: float) -> Connection:
    """A kombu connection to the vetted addresses (in order, as failover alternates), not to a second
    lookup of the URL's host; over TLS the name stays the server name and the certificate's."""
    options: dict[str, Any] = {"connect_timeout": timeout, "transport_options": {"max_retries": 0}}
    if not addresses:
        return Connection(url, **options)
    parts = urlsplit(url)
    userinfo, port = parts.netloc.rpartition("@")[0], f":{parts.port}" if parts.port else ""
    pinned = [
        urlunsplit(parts._replace(netloc=f"{userinfo}@{_host(a)}{port}" if userinfo else f"{_host(a)}{port}"))
        for a in addresses
    ]
    if parts.scheme == "amqps":
        # py-amqp sends no server name and checks none unless told: the name, checked against the
        # certificate, is what makes a connection to an address still the broker's.
        options["ssl"] = {"server_hostname": parts.hostname, "cert_reqs": ssl.CERT_REQUIRED}
    return Connection(pinned, **options)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@dataclass
class _Confirms:
    """Publisher-confirm bookkeeping of one AMQP channel (delivery tags count its publishes from 1)."""

    published: int = 0
    confirmed: int = 0  # every tag up to this one is acknowledged
    acked: set[int] = field(default_factory=set)
    nacked: int | None = None

    def on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.confirmed = max(self.confirmed, tag)
        else:
            self.acked.add(tag)
        while self.confirmed + 1 in self.acked:
            self.confirmed += 1
            self.acked.discard(self.confirmed)

    def on_nack(self, tag: int, multiple: bool) -> None:
        self.nacked = tag if self.nacked is None else min(self.nacked, tag)


_confirms: weakref.WeakKeyDictionary[Any, _Confirms] = weakref.WeakKeyDictionary()


def _confirming(channel: Any) -> _Confirms:
    state = _confirms.get(channel)
    if state is None:
        state = _confirms[channel] = _Confirms()
        channel.events["basic_ack"].add(state.on_ack)
        channel.events["basic_nack"].add(state.on_nack)
        channel.confirm_select()
    return state


def publish(
    sink_key: str,
    url: str,
    exchange: str,
    messages: list[Outgoing],
    timeout: float,
    addresses: Sequence[str],
) -> None:
    """Publish ``messages`` in order to the broker at the vetted ``addresses`` (those of ``url``'s
    host that the egress check returned; none for sqs://); raises PublishFailed with how many were confirmed
    before it."""
    pool = _pool(sink_key, url, addresses, timeout)
    try:
        conn = pool.acquire(block=True, timeout=timeout)
    except Exception as exc:
        raise PublishFailed(0, _reason(exc, url)) from exc
    confirms: _Confirms | None = None
    start = sent = 0
    try:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        channel = conn.default_channel
        if conn.transport.driver_type == "amqp":
            confirms = _confirming(channel)
            start = confirms.published
        target = Exchange(exchange, type="topic", durable=True) if exchange else Exchange("")
        producer = Producer(channel, exchange=target)
        for message in messages:
            producer.publish(
                message.body,
                routing_key=message.routing_key,
                content_type=CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=message.message_id,
                declare=[target] if exchange else [],
                retry=False,
                timeout=timeout,
            )
            if confirms is None:
                sent += 1  # other transports' publishes return once the broker has the message
            else:
                confirms.published += 1
        if confirms is not None:
            _await_confirms(channel, confirms, timeout)
    except Exception as exc:
        # A connection in an unknown state is not handed to the next caller: drop it, reconnect later.
        if confirms is not None:
            last_good = confirms.confirmed if confirms.nacked is None else confirms.nacked - 1
            sent = max(0, min(confirms.confirmed, last_good) - start)
        conn.collect()
        raise PublishFailed(sent, _reason(exc, url)) from exc
    finally:
        conn.release()


def _await_confirms(channel: Any, confirms: _Confirms, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while confirms.confirmed < confirms.published:
        if confirms.nacked is not None:
            raise Nacked(f"the broker refused message {confirms.nacked} (basic.nack)")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the broker did not confirm within {timeout:g} s")
        channel.wait([spec.Basic.Ack, spec.Basic.Nack], timeout=left)
    if confirms.nacked is not None:
        raise Nacked(f"the broker refused message {confirms.nacked} (basic.nack)")


def _reason(exc: BaseException, url: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return text[:1000]
