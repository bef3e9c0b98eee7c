"""Counter fields in the metrics hash: one JSON field per name and label set, whatever order the
labels come in, and a counter or label that is not declared refused every time."""

from __future__ import annotations

import json

import pytest

from events.metrics import Increments, count
from events.streams import Names

NAMES = Names("agentapi-test:")


def test_one_field_per_label_set() -> None:
    counts = Increments()
    for _ in range(3):
        count(counts, NAMES, "events_consumed", stream="work:audit", outcome="acked")
    count(counts, NAMES, "events_consumed", 2, outcome="acked", stream="work:audit")
    assert dict(counts.whole) == {
        (NAMES.metrics(), '["events_consumed",[["outcome","acked"],["stream","work:audit"]]]'): 5
    }
    (field,) = {field for _, field in counts.whole}
    assert json.loads(field) == ["events_consumed", [["outcome", "acked"], ["stream", "work:audit"]]]


@pytest.mark.parametrize("attempt", range(2))
def test_undeclared_counters_and_labels_are_refused_every_time(attempt: int) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        count(Increments(), NAMES, "events_published", stream="work:audit", extra="x")
    with pytest.raises(ValueError, match="unknown metric"):
        count(Increments(), NAMES, "no_such_counter", stream="work:audit")
