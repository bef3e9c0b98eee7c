"""``/metrics`` for Prometheus: this process's HTTP figures and SSE subscribers, plus the cluster's
streams, queues, sessions and worker counters read from Redis at scrape time."""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import prometheus_client
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError, ResponseError

from api.state import Resources, resources
from events import replies
from events.hosts import live_hosts
from events.metrics import PREFIX, families
from events.streams import DISPATCH_GROUP, WorkKind

log = logging.getLogger(__name__)
# Prometheus's text format; Litestar appends "; charset=utf-8" to every text/ type itself.
CONTENT_TYPE = "text/plain; version=0.0.4"


class HttpMetrics:
    """Request rate and latency by route template (never the raw path: ids would explode the
    series), with the names and labels Litestar's Prometheus middleware gave them. Each label
    set's children are looked up once and kept: ``labels()`` takes a lock and builds the key on
    every call, and a request made five such calls."""

    LABELS = ("method", "path", "status_code", "app_name")

    def __init__(self) -> None:
        self._requests = prometheus_client.Counter(
            f"{PREFIX}http_requests_total", "Total requests", self.LABELS
        )
        self._errors = prometheus_client.Counter(
            f"{PREFIX}http_requests_error_total", "Total errors in requests", self.LABELS
        )
        self._seconds = Histogram(
            f"{PREFIX}http_request_duration_seconds", "Request duration, in seconds", self.LABELS
        )
        self._in_progress = Gauge(
            f"{PREFIX}http_requests_in_progress",
            "Total requests currently in progress",
            self.LABELS,
            multiprocess_mode="livesum",
        )
        self._done: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._running: dict[tuple[str, str], Any] = {}

    def running(self, method: str, path: str) -> Any:
        """The in-progress gauge of a route (``inc()`` it, ``dec()`` it when done)."""
        key = (method, path)
        child = self._running.get(key)
        if child is None:
            child = self._running[key] = self._in_progress.labels(method, path, "200", APP_NAME)
        return child

    def done(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        children = self._done.get(key)
        if children is None:
            labels = (method, path, str(status), APP_NAME)
            children = self._done[key] = (
                self._requests.labels(*labels),
                self._seconds.labels(*labels),
                self._errors.labels(*labels) if status >= 500 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()


APP_NAME = "agentapi"
HTTP = HttpMetrics()


def _gauge(name: str, help_: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help_, labels=list(labels))


async def _streams(res: Resources) -> list[Metric]:
    length = _gauge("stream_length", "Entries in a stream", ["stream"])
    pending = _gauge(
        "stream_pending", "Entries delivered to a consumer group but not acknowledged", ["stream", "group"]
    )
    lag = _gauge("stream_lag", "Entries not yet delivered to a consumer group", ["stream", "group"])
    for kind in WorkKind:
        key = res.names.work(kind)
        label = res.names.stream_label(key)
        length.add_metric([label], await res.redis.xlen(key))
        try:
            groups = await res.redis.xinfo_groups(key)
        except ResponseError:  # the stream does not exist yet
            groups = []
        for group in groups:
            if group["name"] == DISPATCH_GROUP:
                pending.add_metric([label, group["name"]], group["pending"])
                lag.add_metric([label, group["name"]], group.get("lag") or 0)
    length.add_metric(["dead"], await res.redis.xlen(res.names.dead_letter()))
    return [length, pending, lag]


async def _queues(res: Resources) -> Metric:
    depth = _gauge(
        "queue_depth",
        "Dramatiq messages by queue and state: ready (not yet taken), in_flight (taken, not acknowledged),"
        " delayed (retry back-off)",
        ["queue", "state"],
    )
    for kind in WorkKind:
        ready = await res.redis.llen(res.names.dramatiq_queue(kind.value))
        # The broker keeps each message's body until it is acknowledged: waiting, prefetched or running.
        unacked = await res.redis.hlen(res.names.dramatiq_unacked(kind.value))
        depth.add_metric([kind.value, "ready"], ready)
        depth.add_metric([kind.value, "in_flight"], max(unacked - ready, 0))
        depth.add_metric(
            [kind.value, "delayed"], await res.redis.hlen(res.names.dramatiq_delayed(kind.value))
        )
    return depth


async def _sessions(res: Resources) -> Metric:
    key = res.names.active_sessions()
    # Hosts that died without cleaning up stop heartbeating; their entries expire here.
    await res.redis.zremrangebyscore(key, "-inf", time.time())
    members = replies.members(await res.redis.zrange(key, 0, -1))
    by_agent = Counter(member.rpartition(":")[0] for member in members)
    active = _gauge("active_sessions", "Sessions with a live host, by agent type", ["agent_type"])
    for agent_type, number in sorted(by_agent.items()):
        active.add_metric([agent_type], number)
    return active


async def _placement(res: Resources) -> list[Metric]:
    """Sessions hosts' slots and load, and the sessions that wait for a host: the autoscaler's inputs."""
    key = res.names.session_hosts()
    now = time.time()
    entries = replies.fields(await res.redis.hgetall(key))
    hosts = live_hosts(entries, now)
    if stale := [worker for worker in entries if worker not in hosts]:
        await res.redis.hdel(key, *stale)
    count = _gauge("session_hosts", "Sessions workers advertising capacity")
    slots = _gauge("host_session_slots", "Sessions a host can run at once (its worker threads)", ["host"])
    hosted = _gauge("host_sessions", "Sessions a host runs", ["host"])
    utilization = _gauge("host_utilization", "Share of a host's session slots in use", ["host"])
    for worker, entry in sorted(hosts.items()):
        slots.add_metric([worker], entry["slots"])
        hosted.add_metric([worker], entry["sessions"])
        utilization.add_metric([worker], entry["sessions"] / entry["slots"] if entry["slots"] else 1.0)
    count.add_metric([], len(hosts))
    # Not yet dispatched from the work stream, in the queue, in a hand-over's back-off, or taken by
    # a worker but not running (prefetched): every session request that no host runs yet.
    stream = res.names.work(WorkKind.SESSIONS)
    try:
        groups = await res.redis.xinfo_groups(stream)
    except ResponseError:  # the stream does not exist yet
        groups = []
    undispatched = sum(
        (group.get("lag") or 0) + group["pending"] for group in groups if group["name"] == DISPATCH_GROUP
    )
    unacked = await res.redis.hlen(res.names.dramatiq_unacked(WorkKind.SESSIONS.value))
    delayed = await res.redis.hlen(res.names.dramatiq_delayed(WorkKind.SESSIONS.value))
    running = sum(int(entry["sessions"]) for entry in hosts.values())
    waiting = _gauge(
        "sessions_waiting", "Session requests that no host runs yet (scale the sessions pool on it)"
    )
    waiting.add_metric([], undispatched + delayed + max(unacked - running, 0))
    return [count, slots, hosted, utilization, waiting]


async def cluster_metrics(res: Resources) -> list[Metric]:
    """Everything read from Redis; ``agentapi_cluster_metrics_up`` says whether that worked."""
    up = _gauge("cluster_metrics_up", "1 when the cluster-wide figures could be read from Redis")
    try:
        found = [*families(replies.fields(await res.redis.hgetall(res.names.metrics())))]
        found += await _streams(res)
        found += [await _queues(res), await _sessions(res), *await _placement(res)]
    except (RedisError, OSError) as exc:
        log.warning("metrics: Redis unavailable: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    return [up, *found]


def _process_metrics(res: Resources) -> list[Metric]:
    subscribers = _gauge("sse_subscribers", "Open SSE subscriptions to session logs in this ingress process")
    subscribers.add_metric([], res.hub.subscriber_count)
    return [subscribers]


class _Snapshot(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


@get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: State) -> Response[bytes]:
    res = resources(state)
    token = res.settings.metrics_token
    if token is None and res.settings.environment == "production":
        # Process and cluster figures (queue depths, hosts, tenants' load) are not public.
        raise PermissionDeniedException("/metrics is off in production until AGENTAPI_METRICS_TOKEN is set")
    if token is not None and not hmac.compare_digest(
        request.headers.get("authorization", "").encode(), f"Bearer {token.get_secret_value()}".encode()
    ):
        raise NotAuthorizedException("/metrics needs the metrics token (AGENTAPI_METRICS_TOKEN)")
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot([*_process_metrics(res), *await cluster_metrics(res)]))
    return Response(generate_latest(REGISTRY) + generate_latest(snapshot), media_type=CONTENT_TYPE)
