"""What each adapter writes, runs and hands over, and how it reads screens.

Codex and Gemini CLI also run for real in test_codex_cli.py, test_gemini_cli.py and
test_agent_cli_sessions.py; the aider screens are captured from Aider 0.86.2 against the fake OpenAI
API. goose and droid could not be run here (goose ships no npm or PyPI package; droid needs a
Factory account), so their files and flags follow their documentation and their screens are
written after it.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
import uuid
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from services.agents import AGENT_TYPES
from services.agents.binaries import agent_binary, repo_bin
from workers.agents import ADAPTERS, get_adapter
from workers.agents.base import AgentAdapter, LaunchContext
from workers.agents.goose import openai_host_and_path

GATEWAY_TOKEN = "gateway-token-not-for-env"
PLATFORM_ENV = {
    "ANTHROPIC_BASE_URL": "https://anthropic.example",
    "ANTHROPIC_API_KEY": "sk-ant-platform",
    "OPENAI_BASE_URL": "https://models.example/v1",
    "OPENAI_API_KEY": "sk-openai-platform",
    "OPENAI_MODEL": "gpt-house",
    "GOOGLE_GEMINI_BASE_URL": "https://gemini.example",
    "GEMINI_API_KEY": "gemini-platform",
    "GEMINI_MODEL": "gemini-house",
    "FACTORY_API_KEY": "fk-platform",
}
# The provider variables each CLI may receive; anything else of PLATFORM_ENV must stay out.
NEEDS = {
    "codex": {"OPENAI_API_KEY"},
    "gemini": {"GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"},
    "aider": {"OPENAI_API_KEY"},
    "goose": {"OPENAI_API_KEY"},
    "droid": {"FACTORY_API_KEY"},
}


def context(tmp_path: Path, **overrides: object) -> LaunchContext:
    values: dict[str, object] = {
        "session_id": uuid.uuid4(),
        "org_id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "workspace": tmp_path,
        "home": tmp_path / ".home",
        "system_prompt": "Follow the house rules.",
        "mcp_gateway_url": "http://127.0.0.1:8000/api/v1/mcp/gateway/s1",
        "mcp_gateway_token": GATEWAY_TOKEN,
        "agent_env": PLATFORM_ENV,
    }
    values.update(overrides)
    return LaunchContext(**values)  # type: ignore[arg-type]


def written(home: Path) -> dict[Path, str]:
    return {path: path.read_text() for path in home.rglob("*") if path.is_file()}


def launch(adapter: AgentAdapter, ctx: LaunchContext) -> tuple[dict[Path, str], list[str], dict[str, str]]:
    adapter.prepare(ctx)
    return written(ctx.home), adapter.command(ctx), adapter.environment(ctx)


def test_every_agent_type_has_an_adapter() -> None:
    assert set(AGENT_TYPES) - set(ADAPTERS) <= {"ccrouter"}, "only ccrouter is built elsewhere"
    for agent_type in NEEDS:
        assert get_adapter(agent_type).name == agent_type
    assert get_adapter("factory").name == "droid"


@pytest.mark.parametrize("agent_type", sorted(NEEDS))
def test_files_are_private_and_secrets_stay_where_they_belong(agent_type: str, tmp_path: Path) -> None:
    files, argv, env = launch(get_adapter(agent_type), context(tmp_path))
    assert files, "the adapter writes its configuration into the session's HOME"
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.is_relative_to(tmp_path / ".home"), "nothing is written into the user's workspace"
    for directory in {path.parent for path in files}:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert not any(GATEWAY_TOKEN in arg for arg in argv)
    assert not any(GATEWAY_TOKEN in value for value in env.values())
    passed = {key for key, value in env.items() if PLATFORM_ENV.get(key) == value}
    assert passed == NEEDS[agent_type], "only the provider variables this CLI needs"
    assert not any(value in " ".join(argv) for key, value in PLATFORM_ENV.items() if "KEY" in key)
    token_files = [path for path, text in files.items() if GATEWAY_TOKEN in text]
    assert len(token_files) == (0 if agent_type == "aider" else 1), "the token lives in one config file"
    assert any("Follow the house rules." in text for text in files.values())


def test_codex_config(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    files, argv, env = launch(get_adapter("codex"), ctx)
    config = tomllib.loads(files[ctx.home / ".codex" / "config.toml"])
    provider = config["model_providers"][config["model_provider"]]
    assert provider == {
        "name": "agentapi",
        "base_url": "https://models.example/v1",
        "env_key": "OPENAI_API_KEY",
        "wire_api": "responses",
    }
    assert config["model"] == "gpt-house"
    assert config["mcp_servers"]["agentapi"] == {
        "url": ctx.mcp_gateway_url,
        "http_headers": {"Authorization": f"Bearer {GATEWAY_TOKEN}"},
        "required": True,
    }
    assert config["projects"][str(tmp_path)] == {"trust_level": "trusted"}
    assert (config["approval_policy"], config["sandbox_mode"]) == ("on-request", "workspace-write")
    assert files[ctx.home / ".codex" / "AGENTS.md"] == "Follow the house rules."
    assert env["CODEX_HOME"] == str(ctx.home / ".codex")
    assert argv[1:] == ["--no-daemon"]
    assert get_adapter("codex").command(context(tmp_path, resume=True))[1:] == [
        "resume",
        "--last",
        "--no-daemon",
    ]


def test_codex_without_an_endpoint_uses_openai_and_its_own_model(tmp_path: Path) -> None:
    ctx = context(tmp_path, agent_env={"OPENAI_API_KEY": "sk-x"}, mcp_gateway_url=None, system_prompt="")
    files, _, _ = launch(get_adapter("codex"), ctx)
    config = tomllib.loads(files[ctx.home / ".codex" / "config.toml"])
    assert config["model_providers"]["agentapi"]["base_url"] == "https://api.openai.com/v1"
    assert "model" not in config and "mcp_servers" not in config
    assert list(files) == [ctx.home / ".codex" / "config.toml"]


def test_gemini_settings(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    files, argv, env = launch(get_adapter("gemini"), ctx)
    settings = json.loads(files[ctx.home / ".gemini" / "settings.json"])
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["security"]["folderTrust"]["enabled"] is False
    assert settings["model"]["name"] == "gemini-house"
    assert settings["mcpServers"]["agentapi"] == {
        "httpUrl": ctx.mcp_gateway_url,
        "headers": {"Authorization": f"Bearer {GATEWAY_TOKEN}"},
    }
    assert files[ctx.home / ".gemini" / "GEMINI.md"] == "Follow the house rules."
    assert env == {"GEMINI_API_KEY": "gemini-platform", "GOOGLE_GEMINI_BASE_URL": "https://gemini.example"}
    assert argv[1:] == []
    assert get_adapter("gemini").command(context(tmp_path, resume=True))[1:] == ["--resume", "latest"]


def test_aider_flags(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    files, argv, env = launch(get_adapter("aider"), ctx)
    conventions = ctx.home / ".aider" / "CONVENTIONS.md"
    assert files == {conventions: "Follow the house rules."}, "no MCP config: aider has no MCP client"
    flags = argv[1:]
    for flag in ("--yes-always", "--no-auto-commits", "--no-check-update", "--analytics-disable"):
        assert flag in flags
    pairs = dict(pairwise(flags))
    assert pairs["--openai-api-base"] == "https://models.example/v1"
    assert pairs["--model"] == "openai/gpt-house"
    assert pairs["--read"] == str(conventions)
    assert Path(pairs["--chat-history-file"]).is_relative_to(ctx.home), "histories stay out of the workspace"
    assert "--restore-chat-history" not in flags
    assert "--restore-chat-history" in get_adapter("aider").command(context(tmp_path, resume=True))
    assert env["OPENAI_API_KEY"] == "sk-openai-platform"


def test_goose_config_and_provider(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    files, argv, env = launch(get_adapter("goose"), ctx)
    config = yaml.safe_load(files[ctx.home / ".config" / "goose" / "config.yaml"])
    gateway = config["extensions"]["agentapi"]
    assert gateway["type"] == "streamable_http" and gateway["enabled"] is True
    assert gateway["uri"] == ctx.mcp_gateway_url
    assert gateway["headers"] == {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    assert config["extensions"]["developer"]["type"] == "builtin"
    assert files[ctx.home / ".config" / "goose" / ".goosehints"] == "Follow the house rules."
    assert env["GOOSE_PROVIDER"] == "openai" and env["GOOSE_MODEL"] == "gpt-house"
    assert (env["OPENAI_HOST"], env["OPENAI_BASE_PATH"]) == ("https://models.example", "v1/chat/completions")
    assert env["GOOSE_DISABLE_KEYRING"] == "1"
    assert argv[1:] == ["session"]
    assert get_adapter("goose").command(context(tmp_path, resume=True))[1:] == ["session", "--resume"]


@pytest.mark.parametrize(
    ("base_url", "host", "path"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com", "v1/chat/completions"),
        ("http://127.0.0.1:4000/", "http://127.0.0.1:4000", "chat/completions"),
        ("https://proxy.example/openai/v1/", "https://proxy.example", "openai/v1/chat/completions"),
    ],
)
def test_goose_splits_an_sdk_base_url(base_url: str, host: str, path: str) -> None:
    assert openai_host_and_path(base_url) == (host, path)


def test_droid_settings_and_mcp(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    files, argv, env = launch(get_adapter("droid"), ctx)
    settings = json.loads(files[ctx.home / ".factory" / "settings.json"])
    [model] = settings["customModels"]
    assert model["provider"] == "generic-chat-completion-api"
    assert (model["baseUrl"], model["model"], model["apiKey"]) == (
        "https://models.example/v1",
        "gpt-house",
        "sk-openai-platform",
    )
    assert settings["sessionDefaultSettings"]["model"] == model["id"]
    mcp = json.loads(files[ctx.home / ".factory" / "mcp.json"])
    assert mcp["mcpServers"]["agentapi"] == {
        "type": "http",
        "url": ctx.mcp_gateway_url,
        "headers": {"Authorization": f"Bearer {GATEWAY_TOKEN}"},
    }
    prompt = Path(argv[argv.index("--append-system-prompt-file") + 1])
    assert prompt.read_text() == "Follow the house rules."
    assert env["FACTORY_API_KEY"] == "fk-platform"
    assert get_adapter("droid").command(context(tmp_path, resume=True, system_prompt=""))[1:] == [
        "--resume",
        "--last",
    ]


def test_agent_binary_prefers_the_override_then_the_repo_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTAPI_GOOSE_BIN", "/opt/goose/bin/goose")
    assert agent_binary("goose") == "/opt/goose/bin/goose"
    monkeypatch.delenv("AGENTAPI_GOOSE_BIN")
    shim = tmp_path / "goose"
    shim.write_text("#!/bin/sh\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert agent_binary("goose") == str(shim)
    assert agent_binary("codex") == str(repo_bin("codex")), "npm ci installs codex into node_modules/.bin"
    assert agent_binary("no-such-agent-cli") == "no-such-agent-cli"


def test_aider_format_drops_the_cost_line_and_the_file_list() -> None:
    screen = (
        "> Fix the bug in main.py\n\nThe bug is an off-by-one in the loop.\n\nmain.py\n\nApplied edit to main.py\n\n"
        "Tokens: 2.1k sent, 180 received. Cost: $0.01 message, $0.02 session.\n"
        "────────────────────────────────\nEditable: main.py\nReadonly: CONVENTIONS.md\n>"
    )
    text = get_adapter("aider").format_message(screen, "Fix the bug in main.py")
    assert text == "The bug is an off-by-one in the loop.\n\nmain.py\n\nApplied edit to main.py"


def test_goose_format_drops_its_prompt_and_echo() -> None:
    screen = (
        "( O)> What is in this folder?\n"
        "─── shell | developer ──────────────────────────\n"
        "command: ls\n\n"
        "There are two files: README.md and main.py.\n"
        "Context: ●●○○○○○○○○ 18% (36000/200000 tokens)\n"
        "( O)> Press Enter to send, Ctrl-J for new line\n"
        "( O)>"
    )
    text = get_adapter("goose").format_message(screen, "What is in this folder?")
    assert (
        text
        == "─── shell | developer ──────────────────────────\ncommand: ls\n\nThere are two files: README.md and main.py."
    )


def test_goose_start_screen_keeps_the_session_banner() -> None:
    screen = (
        "starting session | provider: openai model: gpt-house\n"
        "    session id: 20260401_1\n    working directory: /work/session\n\n"
        "goose is running! Enter your instructions, or try asking what goose can do.\n\n( O)>"
    )
    assert get_adapter("goose").format_message(screen, "").endswith("try asking what goose can do.")


def test_droid_format_drops_the_input_box_and_hints() -> None:
    screen = (
        "> Explain main.py\n\n"
        "⛬  main.py starts the HTTP server and wires the routes.\n"
        "   It reads its port from PORT.\n\n"
        "╭──────────────────────────────────────────╮\n"
        "│ >                                        │\n"
        "╰──────────────────────────────────────────╯\n"
        "Auto (Off) - all actions require approval      ? for help\n"
    )
    text = get_adapter("droid").format_message(screen, "Explain main.py")
    assert text == "main.py starts the HTTP server and wires the routes.\nIt reads its port from PORT."
