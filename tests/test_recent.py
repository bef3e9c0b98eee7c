"""The per-process short-lived lookup cache: expiry, the size bound, forgetting."""

from __future__ import annotations

from services.recent import Recent

MISSING = object()


def test_a_value_is_kept_until_it_expires() -> None:
    kept: Recent[str, int | None] = Recent(seconds=60)
    kept.put("a", None)
    assert kept.get("a", MISSING) is None, "a stored None is a value, not a miss"
    expired: Recent[str, int] = Recent(seconds=0)
    expired.put("a", 1)
    assert expired.get("a", MISSING) is MISSING


def test_the_oldest_entries_go_beyond_the_size() -> None:
    recent: Recent[int, int] = Recent(seconds=60, size=3)
    for key in range(3):
        recent.put(key, key)
    recent.put(0, 10)  # written again: now the newest
    recent.put(3, 3)
    assert [recent.get(k, MISSING) for k in range(4)] == [10, MISSING, 2, 3]


def test_forgetting_drops_one_entry() -> None:
    recent: Recent[str, int] = Recent(seconds=60)
    recent.put("a", 1)
    recent.put("b", 2)
    recent.forget("a")
    recent.forget("never there")
    assert (recent.get("a", MISSING), recent.get("b", MISSING)) == (MISSING, 2)
