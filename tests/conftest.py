"""Fixture modules live in tests/fixtures/, one per backing service or concern."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.auth",
    "tests.fixtures.stack",
]
