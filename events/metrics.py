"""Cluster-wide counters and histograms, kept in one Redis hash.

Workers are many short-lived processes on many hosts and none of them serves HTTP, so what they
count (events consumed, actor durations, tool calls) is added to a hash every process shares; the
ingress exposes it at ``/metrics``. Values are cluster totals: every ingress replica shows the same
figures, so aggregate them with ``max`` rather than ``sum``.

Each function takes the Redis object to queue the command on: a pipeline (nothing to await, the
command runs with the pipeline), an asyncio client (await the result) or a blocking client.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from events.streams import Names

PREFIX = "agentapi_"


class Increments:
    """Stands in for a pipeline to this module's writers, adding up their hash increments so that
    many observations are written with one command per field (``write``)."""

    def __init__(self) -> None:
        self.whole: Counter[tuple[str, str]] = Counter()
        self.fractional: defaultdict[tuple[str, str], float] = defaultdict(float)

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self.whole[key, field] += amount

    def hincrbyfloat(self, key: str, field: str, amount: float = 1.0) -> None:
        self.fractional[key, field] += amount

    def write(self, pipe: Any) -> None:
        for (key, field), whole in self.whole.items():
            pipe.hincrby(key, field, whole)
        for (key, field), fractional in self.fractional.items():
            pipe.hincrbyfloat(key, field, fractional)


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


COUNTERS = {
    family.name: family
    for family in (
        Family("events_published", "Events appended to a stream, by stream", ("stream",)),
        Family(
            "events_consumed",
            "Stream entries a consumer finished with, by stream and outcome (acked, failed, dead_lettered)",
            ("stream", "outcome"),
        ),
        Family("tool_calls", "MCP tool calls, by outcome (success or the error code)", ("outcome",)),
    )
}
HISTOGRAMS = {
    family.name: family
    for family in (
        Family(
            "actor_duration_seconds",
            "Time Dramatiq actors spent on a message, by actor and outcome",
            ("actor", "outcome"),
            (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200, math.inf),
        ),
    )
}


def _field(name: str, labels: Mapping[str, str]) -> str:
    return json.dumps([name, sorted(labels.items())], separators=(",", ":"))


def _checked(family: Family | None, name: str, labels: Mapping[str, str]) -> Family:
    if family is None or set(labels) != set(family.labels):
        raise ValueError(f"unknown metric {name} or labels {sorted(labels)}")
    return family


def count(target: Any, names: Names, name: str, amount: int = 1, **labels: str) -> Any:
    """Adds ``amount`` to the counter ``name`` with ``labels``."""
    return target.hincrby(names.metrics(), _counter_field(name, tuple(labels.items())), amount)


@lru_cache(maxsize=1024)
def _counter_field(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    # Every published event counts itself: its field's check and JSON once per label set, not per event.
    as_dict = dict(labels)
    _checked(COUNTERS.get(name), name, as_dict)
    return _field(name, as_dict)


def observe(pipe: Any, names: Names, name: str, value: float, **labels: str) -> None:
    """Records ``value`` in the histogram ``name``; ``pipe`` must be a pipeline (several commands)."""
    buckets, total = _histogram_fields(name, tuple(labels.items()))
    key = names.metrics()
    for bound, field in buckets:
        if value <= bound:
            pipe.hincrby(key, field, 1)
    pipe.hincrbyfloat(key, total, value)


@lru_cache(maxsize=256)
def _histogram_fields(
    name: str, labels: tuple[tuple[str, str], ...]
) -> tuple[tuple[tuple[float, str], ...], str]:
    # Every direct-lane run is observed: the bucket fields' JSON once per label set, not per run
    # (a dozen json.dumps were ~70 µs of the tools worker's loop per gateway call).
    as_dict = dict(labels)
    family = _checked(HISTOGRAMS.get(name), name, as_dict)
    buckets = tuple((b, _field(name, {**as_dict, "le": _bound(b)})) for b in family.buckets)
    return buckets, _field(f"{name}:sum", as_dict)


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def families(stored: Mapping[str, str]) -> Iterable[Metric]:
    """Prometheus metric families from the hash's contents (``HGETALL``)."""
    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for raw_field, raw_value in stored.items():
        try:
            name, pairs = json.loads(raw_field)
            labels = tuple((str(k), str(v)) for k, v in pairs)
            values.setdefault(str(name), {})[labels] = float(raw_value)
        except (ValueError, TypeError):
            continue
    for family in COUNTERS.values():
        counter = CounterMetricFamily(PREFIX + family.name, family.help, labels=family.labels)
        for labels, value in sorted(values.get(family.name, {}).items()):
            counter.add_metric([dict(labels)[label] for label in family.labels], value)
        yield counter
    for family in HISTOGRAMS.values():
        histogram = HistogramMetricFamily(PREFIX + family.name, family.help, labels=family.labels)
        series: dict[tuple[str, ...], dict[str, float]] = {}
        for labels, value in values.get(family.name, {}).items():
            as_dict = dict(labels)
            series.setdefault(tuple(as_dict[label] for label in family.labels), {})[as_dict["le"]] = value
        sums = values.get(f"{family.name}:sum", {})
        for key, buckets in sorted(series.items()):
            total = sums.get(tuple(sorted(zip(family.labels, key, strict=True))), 0.0)
            histogram.add_metric(
                list(key),
                [(_bound(bound), buckets.get(_bound(bound), 0.0)) for bound in family.buckets],
                total,
            )
        yield histogram
