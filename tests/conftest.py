"""Fixture modules live in tests/fixtures/, one per backing service or concern."""

import os

# Settings built in tests are test settings (production refuses the SQLite default).
os.environ["AGENTAPI_ENVIRONMENT"] = "test"

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.auth",
    "tests.fixtures.stack",
]
