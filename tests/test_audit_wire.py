"""``audit_wire`` writes the JSON ``audit_event(...).to_wire()`` writes: compared byte for byte
(but the event's own id and time, which differ between any two events), for the message path's
record and for the inputs the models change, clip, redact or refuse."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from events.audit import audit_event, audit_wire
from events.envelope import Event, EventType

ORG, USER, SESSION = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
LATIN_1 = "".join(map(chr, range(256)))


def message_record(**changes: Any) -> dict[str, Any]:
    """The arguments of an accepted message's record (api.audit_trail.along), with ``changes``."""
    return {
        "org_id": ORG,
        "actor_user_id": USER,
        "action": "POST /api/v1/sessions/{session_id:uuid}/message",
        "outcome": "success",
        "resource_type": "sessions",
        "resource_id": str(SESSION),
        "details": {"status": 200, "role": "member"},
        "ip": "127.0.0.1",
        "user_agent": "wrk",
        "correlation_id": "01KBX5Q3JYM0A8R1E7T4W2N9HC",
        **changes,
    }


def same_but_id_and_time(fast: str, slow: str) -> bool:
    """Whether ``fast`` is ``slow`` with another id and time (each a valid one)."""
    fast_event, slow_event = Event.from_wire(fast), Event.from_wire(slow)
    assert fast_event.type is EventType.AUDIT_RECORDED
    as_slow = fast.replace(fast_event.id, slow_event.id, 1).replace(
        json.dumps(fast_event.model_dump(mode="json")["ts"]),
        json.dumps(slow_event.model_dump(mode="json")["ts"]),
        1,
    )
    return as_slow == slow


CASES: dict[str, dict[str, Any]] = {
    "the message path's": {},
    "a client key's": {"details": {"status": 200, "role": "admin", "via": "session_client_key"}},
    "another session's": {"session_id": SESSION},
    "no actor": {"actor_user_id": None},
    "every latin-1 character": {"user_agent": LATIN_1, "ip": LATIN_1[:64], "resource_id": LATIN_1[128:]},
    "beyond the columns": {
        "user_agent": "u" * 600,
        "ip": "1" * 70,
        "resource_id": "r" * 200,
        "resource_type": "t" * 70,
    },
    "empty texts": {"user_agent": "", "ip": "", "resource_id": "", "resource_type": ""},
    "missing texts": {"user_agent": None, "ip": None, "resource_id": None, "resource_type": None},
    "no action": {"action": ""},
    "a long action": {"action": "a" * 150},
    "an unknown outcome": {"outcome": "maybe"},
    "a denial": {"outcome": "denied", "details": {"status": 403, "role": "member"}},
    "secrets in details": {
        "details": {"api_token": "x", "note": "Bearer abcdefghijklmnopqrstuvwxyz0123456789"}
    },
    "a float detail": {"details": {"status": 200.0}},
    "a bool detail": {"details": {"status": True}},
    "an int detail": {"details": {"status": 1}},
    "a nan detail": {"details": {"ratio": math.nan}},
    "a nested detail": {"details": {"nested": {"token": "x", "list": [1, (2, 3)]}}},
    "no details": {"details": None},
    "a longest correlation id": {"correlation_id": "c" * 128},
    "a correlation id to escape": {"correlation_id": 'a"b\\c\n'},
    "an org id as text": {"org_id": str(ORG)},
    "a user id as text": {"actor_user_id": str(USER)},
}


@pytest.mark.parametrize("changes", list(CASES.values()), ids=list(CASES))
def test_the_same_json_as_the_models(changes: dict[str, Any]) -> None:
    # Twice: the second record is built from the fragments kept from the first.
    for _ in range(2):
        record = message_record(**changes)
        assert same_but_id_and_time(audit_wire(**record), audit_event(**record).to_wire())


def test_details_equal_as_keys_but_encoded_differently_are_not_confused() -> None:
    for status in (1, 1.0, True, 1, True):
        record = message_record(details={"status": status})
        assert same_but_id_and_time(audit_wire(**record), audit_event(**record).to_wire())


def test_without_a_correlation_id_the_envelope_makes_one() -> None:
    event = Event.from_wire(audit_wire(**message_record(correlation_id=None)))
    assert len(event.correlation_id) == 26 and event.correlation_id != event.id


@pytest.mark.parametrize(
    "changes", [{"correlation_id": "c" * 129}, {"org_id": "not an id"}, {"actor_user_id": 7}], ids=str
)
def test_what_the_envelope_refuses_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        audit_event(**message_record(**changes))
    with pytest.raises(ValidationError):
        audit_wire(**message_record(**changes))
