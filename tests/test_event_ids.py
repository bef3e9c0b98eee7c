"""events.ids: the event ids are ULIDs that python-ulid reads back, and they sort in the order made."""

from __future__ import annotations

import threading

from ulid import ULID

from events.envelope import new_event_id
from events.ids import encode


def test_ids_are_ulids_of_now() -> None:
    made = [new_event_id() for _ in range(2000)]
    for text in made:
        parsed = ULID.from_str(text)
        assert str(parsed) == text
    assert abs(ULID.from_str(made[-1]).timestamp - ULID().timestamp) < 5


def test_ids_made_in_order_sort_in_order_and_differ() -> None:
    made: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        for _ in range(5000):
            # Taken and kept under one lock, so the list's order is the order they were made in.
            with lock:
                made.append(new_event_id())

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_encoding_is_python_ulids() -> None:
    for value in (0, 1, 2**80 - 1, 2**80, 2**127 + 12345, 2**128 - 1):
        assert encode(value) == str(ULID.from_int(value))
    for _ in range(500):
        reference = ULID()
        assert encode(int(reference)) == str(reference)
