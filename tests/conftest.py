"""Fixture modules live in tests/fixtures/, one per backing service or concern."""

import os

import pytest

# Settings built in tests are test settings (production refuses the SQLite default).
os.environ["AGENTAPI_ENVIRONMENT"] = "test"

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.auth",
    "tests.fixtures.stack",
    "tests.fixtures.s3",
    "tests.fixtures.rabbitmq",
]

# Markers by place, so a new test file in these folders is marked without remembering to: the fast
# local subset is `-m "not chaos and not browser and not slow"`.
_MARKED_DIRS = {"chaos": "chaos", "console": "browser"}
_SLOW_MODULES = {
    "test_claude_cli",
    "test_codex_cli",
    "test_gemini_cli",
    "test_aider_cli",
    "test_ccrouter",
    "test_agent_cli_sessions",
    "test_schemathesis",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path
        marker = _MARKED_DIRS.get(path.parent.name)
        if marker:
            item.add_marker(marker)
        if path.stem in _SLOW_MODULES:
            item.add_marker("slow")
