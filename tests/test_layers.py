"""Imports point one way (README, Architecture): every module's imports, function-level ones too,
read with ``ast`` and checked against the layers.

    events      the bus contract: imports no other package of this project
    schemas     tables, models, settings, migrations, pure data helpers: may import events
    services    the domain layer: may import schemas and events
    api, workers on top: may import services, schemas and events, never each other, except that
                the CLI entry point (``api.cli`` and the ``agentapi dev`` command it runs,
                ``api.dev``) starts the workers

and no route module (``api.routes.*``) imports another one: what two routes share is a service.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("events", "schemas", "services", "api", "workers")
# What each package may import besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    "events": frozenset(),
    "schemas": frozenset({"events"}),
    "services": frozenset({"events", "schemas"}),
    "api": frozenset({"events", "schemas", "services"}),
    "workers": frozenset({"events", "schemas", "services"}),
}
# The command line starts worker processes; the app itself never reaches into workers.
ENTRY_POINTS = frozenset({"api.cli", "api.dev"})
ROUTES = "api.routes"

# Imports that break the rules today, each with who removes it. This list only shrinks.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    module: str
    target: str
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(name: str) -> bool:
    return ROOT.joinpath(*name.split("."), "__init__.py").is_file()


def _is_module(name: str) -> bool:
    return ROOT.joinpath(*name.split(".")).with_suffix(".py").is_file() or _is_package(name)


def _imports(source: str, module: str, is_package: bool) -> list[Import]:
    """Every import in ``source`` (the text of ``module``) that names a package of this project."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from api.routes import sessions` imports the submodule api.routes.sessions.
                submodule = f"{base}.{alias.name}"
                found.append(Import(module, submodule if _is_module(submodule) else base, node.lineno))
    return [each for each in found if each.target.split(".")[0] in PACKAGES]


def _all_imports() -> list[Import]:
    return [
        found
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for found in _imports(path.read_text(), _module_name(path), path.name == "__init__.py")
    ]


def _violation(found: Import) -> str | None:
    own, other = found.module.split(".")[0], found.target.split(".")[0]
    if own == "api" and other == "workers" and found.module in ENTRY_POINTS:
        return None
    if own != other and other not in ALLOWED[own]:
        return f"{own} may not import {other}"
    if found.target in ENTRY_POINTS and found.module not in ENTRY_POINTS:
        return "only the CLI runs an entry point"
    in_routes = found.module.startswith(f"{ROUTES}.")
    if in_routes and found.target.startswith(f"{ROUTES}.") and found.target != found.module:
        return "a route module may not import another route module"
    return None


def _violations() -> dict[tuple[str, str], str]:
    return {
        (found.module, found.target): f"{found.module}:{found.line} imports {found.target}: {why}"
        for found in _all_imports()
        if (why := _violation(found))
    }


def test_imports_point_one_way() -> None:
    new = [message for key, message in _violations().items() if key not in KNOWN_VIOLATIONS]
    assert not new, "layer violations:\n" + "\n".join(sorted(new))


def test_known_violations_are_still_there() -> None:
    """An entry that no longer occurs is removed from the list, so the list only shrinks."""
    fixed = sorted(
        f"{module} -> {target}" for module, target in KNOWN_VIOLATIONS.keys() - _violations().keys()
    )
    assert not fixed, "fixed, remove from KNOWN_VIOLATIONS:\n" + "\n".join(fixed)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("events.audit", "from schemas.tables import AuditLog", "events may not import schemas"),
        ("schemas.tables", "def f():\n    from services import egress", "schemas may not import services"),
        ("services.mcp.configs", "import api.problems", "services may not import api"),
        ("workers.tool_calls", "from api.auth import Principal", "workers may not import api"),
        ("api.routes.chat", "from workers.agents import canonical_agent_type", "api may not import workers"),
        ("api.routes.chat", "from . import sessions", "a route module may not import another route module"),
        ("api.routes.chat", "from api.routes.sessions import start", "a route module may not import another"),
        ("api.app", "from api.dev import run_dev", "only the CLI runs an entry point"),
        ("api.cli", "from workers.main import run_worker", None),
        ("api.dev", "from workers.lifecycle import end_sessions_of_last_run", None),
        ("schemas.tables", "from events.envelope import Event", None),
        ("api.routes.chat", "from api.problems import problem", None),
        ("api.routes", "from . import sessions", None),
    ],
)
def test_the_checker_names_each_kind_of_violation(module: str, source: str, expected: str | None) -> None:
    imports = _imports(source, module, is_package=_is_package(module))
    assert imports, f"{source!r} was not read as an import of this project"
    verdicts = [_violation(found) for found in imports]
    if expected is None:
        assert verdicts == [None] * len(imports)
    else:
        assert any(verdict and verdict.startswith(expected) for verdict in verdicts), verdicts
