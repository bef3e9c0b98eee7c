"""Redis key names: built only by events.streams.Names, and the same names as before they moved there
(a deploy must find the rate-limit budgets and refusal windows already in Redis)."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

from events.streams import Names

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "events", "services", "schemas", "workers")


def test_moved_keys_keep_their_names() -> None:
    names = Names("p:")
    user, org = uuid.UUID(int=1), uuid.UUID(int=2)
    assert names.rate_limit_user(user) == f"p:rl:user:{user}"
    assert names.rate_limit_org(org) == f"p:rl:org:{org}"
    assert names.rate_limit_address("10.0.0.1") == "p:rl:addr:10.0.0.1"
    assert names.audit_refused(org, "hook") == f"p:audit:refused:{org}:hook"
    assert names.dramatiq_unacked("tools") == "p:dramatiq:tools.msgs"
    assert names.dramatiq_delayed("tools") == "p:dramatiq:tools.DQ.msgs"
    assert names.dramatiq_wake("tools") == "p:dramatiq:tools.wake"
    assert names.dramatiq_wake("tools.DQ") == "p:dramatiq:tools.DQ.wake"


def test_a_channel_name_gives_back_its_session() -> None:
    names = Names("p:session:")  # a prefix that itself looks like a key must not confuse it
    session = uuid.uuid4()
    assert names.session_of_channel(names.session_channel(session)) == str(session)


def test_no_module_builds_a_key_from_the_prefix_itself() -> None:
    """``names.prefix`` read outside events/streams.py is a key name built by hand."""
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "events" / "streams.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "prefix"
                    and isinstance(node.value, ast.Attribute | ast.Name)
                    and (node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id)
                    in ("names", "_names")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"Redis key names built outside events/streams.py: {offenders}"
