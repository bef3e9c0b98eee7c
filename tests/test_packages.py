"""Every top-level package of the application is both layered (tests/test_layers.py) and type-checked
(``files`` of ``[tool.mypy]`` in pyproject.toml, which ``.ci/run`` runs): a package added later
cannot slip past either."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.test_layers import PACKAGES

ROOT = Path(__file__).resolve().parent.parent
# Not the application: the test suite and the benchmarks' drivers.
NOT_APPLICATION = frozenset({"tests", "bench"})


def _application_packages() -> set[str]:
    return {init.parent.name for init in ROOT.glob("*/__init__.py")} - NOT_APPLICATION


def test_mypy_checks_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert set(config["files"]) == _application_packages()


def test_the_layers_cover_every_package() -> None:
    assert set(PACKAGES) == _application_packages()
