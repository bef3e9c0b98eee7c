"""The organization's policy for ACP agents' permission requests: decisions, and its check on save."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from schemas.agent_permissions import PermissionPolicy
from tests.fixtures.stack import Stack


def test_by_default_workspace_files_are_allowed_and_the_rest_is_asked(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "escape").symlink_to("/etc")
    policy = PermissionPolicy()
    assert policy.decide("edit", ["src/main.py", str(tmp_path / "README.md")], tmp_path) == "allow"
    assert policy.decide("read", [], tmp_path) == "allow"
    assert policy.decide("edit", ["/etc/passwd"], tmp_path) == "ask"
    assert policy.decide("read", ["../other-session/notes.txt"], tmp_path) == "ask"
    assert policy.decide("read", ["escape/passwd"], tmp_path) == "ask", "a symlink out is outside"
    for kind in ("execute", "fetch", "other", "switch_mode", None, "something-new"):
        assert policy.decide(kind, [], tmp_path) == "ask"


def test_an_org_policy_overrides_kinds_and_the_outside(tmp_path: Path) -> None:
    policy = PermissionPolicy.model_validate(
        {"kinds": {"execute": "deny", "other": "allow", "edit": "deny"}, "outside_workspace": "deny"}
    )
    assert policy.decide("execute", [], tmp_path) == "deny"
    assert policy.decide("other", [], tmp_path) == "allow"
    assert policy.decide("edit", ["inside.txt"], tmp_path) == "deny", "deny holds inside the workspace too"
    assert policy.decide("read", ["/etc/hosts"], tmp_path) == "deny"
    with pytest.raises(ValidationError):
        PermissionPolicy.model_validate({"kinds": {"execute": "maybe"}})
    with pytest.raises(ValidationError):
        PermissionPolicy.model_validate({"outside_workspace": "allow"})


async def test_an_invalid_policy_is_refused_on_save_naming_the_field(stack: Stack) -> None:
    admin = stack.headers(role="admin")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        refused = await client.put(
            "/api/v1/settings",
            json={"settings": {"agent_permissions": {"kinds": {"execute": "maybe"}, "colour": "blue"}}},
            headers=admin,
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        fields = {error["field"] for error in refused.json()["errors"]}
        assert fields == {"settings.agent_permissions.kinds.execute", "settings.agent_permissions.colour"}
        saved = await client.put(
            "/api/v1/settings",
            json={"settings": {"agent_permissions": {"kinds": {"execute": "deny"}}}},
            headers=admin,
        )
        assert saved.status_code == 200, saved.text
