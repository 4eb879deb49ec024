"""The configuration file (``--mcp-config`` / ``$XDG_CONFIG_HOME/agent-kernel/config.toml``),
profiles, ``agent-kernel config`` and MCP servers from the command line: subprocess runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "actors.cli"]
DEMO_SERVER = str(Path(__file__).parent / "mcp_servers" / "demo_server.py")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        XDG_DATA_HOME=str(tmp_path / "xdg"),
        XDG_CONFIG_HOME=str(tmp_path / "config-home"),
        TMPDIR=str(tmp_path),
        NO_COLOR="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _default_file(tmp_path: Path, text: str) -> Path:
    return _write(tmp_path / "config-home" / "agent-kernel" / "config.toml", text)


def _config_json(args: list[str], tmp_path: Path, **env: str) -> dict[str, Any]:
    result = _run(["config", "--json", *args], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agent-kernel: error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[mcp_servers.demo]\ncomand = "x"\n', "mcp_servers.demo: unknown key 'comand'"),
        ('[mcp_servers.demo]\ncommand = "x"\nargs = "a b"\n', "mcp_servers.demo.args: expected an array of strings"),
        ('[mcp_servers.demo]\ncommand = "x"\nargs = ["a", 1]\n', "mcp_servers.demo.args: expected an array of"),
        ("[mcp_servers.demo]\ncommand = 5\n", "mcp_servers.demo.command: expected a string, got a number"),
        (
            '[mcp_servers.demo]\ncommand = "x"\nenv = { TOKEN = 1 }\n',
            "mcp_servers.demo.env.TOKEN: expected a string, got a number",
        ),
        (
            '[mcp_servers.demo]\ncommand = "x"\ntool_timeout_sec = "60"\n',
            "mcp_servers.demo.tool_timeout_sec: expected a number of seconds, got a string",
        ),
        (
            '[mcp_servers.demo]\ncommand = "x"\nstartup_timeout_sec = 0\n',
            "mcp_servers.demo.startup_timeout_sec: expected a positive number",
        ),
        ('[mcp_servers.demo]\ncommand = "x"\nurl = "http://h/mcp"\n', "mcp_servers.demo: has both command and url"),
        ("[mcp_servers.demo]\nargs = []\n", "mcp_servers.demo: needs command (a stdio server) or url"),
        (
            '[mcp_servers.demo]\nurl = "http://h/mcp"\nenv = {}\n',
            "mcp_servers.demo.env: is for stdio servers (command)",
        ),
        (
            '[mcp_servers.demo]\ncommand = "x"\nhttp_headers = {}\n',
            "mcp_servers.demo.http_headers: is for HTTP servers (url)",
        ),
        ('[mcp_servers.demo]\ncommand = "x"\nenabled = "no"\n', "mcp_servers.demo.enabled: expected a boolean"),
        ('mcp_servers = "x"\n', "mcp_servers: expected a table, got a string"),
        ('modle = "x"\n', "modle: unknown key"),
        ('wire = "grpc"\n', "wire: expected one of responses, chat, got 'grpc'"),
        ("model = 4\n", "model: expected a string, got a number"),
        ('[profiles.work]\nwire = "x"\n', "profiles.work.wire: expected one of responses, chat"),
        ('[profiles.work]\nsandbox = "x"\n', "profiles.work: unknown key 'sandbox'"),
        ('profile = "nope"\n', "profile: no profile 'nope' (profiles: none)"),
        ("model = \n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_file_server_and_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = _write(tmp_path / "servers.toml", toml)
    for command in (["exec", "hi", "--mcp-config", str(path)], ["config", "--mcp-config", str(path)]):
        line = _error(_run(command, tmp_path))
        assert f"{path}: " in line and expected in line, line


def test_bad_default_file_is_named(tmp_path: Path) -> None:
    path = _default_file(tmp_path, '[mcp_servers.demo]\ncommand = "x"\nurl = "http://h"\n')
    line = _error(_run(["exec", "hi"], tmp_path))
    assert f"{path}: mcp_servers.demo: has both command and url" in line


def test_missing_file_given_explicitly(tmp_path: Path) -> None:
    line = _error(_run(["exec", "hi", "--mcp-config", str(tmp_path / "nope.toml")], tmp_path))
    assert line == f"agent-kernel: error: {tmp_path / 'nope.toml'}: no such config file"


def test_unknown_profile_flag(tmp_path: Path) -> None:
    path = _default_file(tmp_path, '[profiles.work]\nmodel = "m"\n[profiles.home]\nmodel = "h"\n')
    line = _error(_run(["config", "--profile", "play"], tmp_path))
    assert line == f"agent-kernel: error: {path}: no profile 'play' (profiles: home, work)"


# ---------------------------------------------------------------------------------------------
# Settings, precedence, profiles, `agent-kernel config`
# ---------------------------------------------------------------------------------------------


def test_defaults_without_a_file(tmp_path: Path) -> None:
    data = _config_json([], tmp_path)
    assert data["config_file"] == str(tmp_path / "config-home" / "agent-kernel" / "config.toml")
    assert data["config_file_exists"] is False
    assert data["settings"] == {
        "model": {"value": None, "source": "default"},
        "base_url": {"value": None, "source": "default"},
        "wire": {"value": "responses", "source": "default"},
        "api_key_env": {"value": "OPENAI_API_KEY", "source": "default"},
        "approval": {"value": "on-request", "source": "default"},
    }
    assert data["mcp_servers"] == {}


CONFIG = """
model = "file-model"
base_url = "http://127.0.0.1:9/v1"
wire = "chat"
api_key_env = "FILE_KEY"

[profiles.work]
model = "work-model"
approval = "never"

[mcp_servers.demo]
command = "python"
args = ["server.py", "--flag"]
env = { DEMO_TOKEN = "env-secret-value" }
tool_timeout_sec = 5
disabled_tools = ["peek"]

[mcp_servers.docs]
url = "https://example.com/mcp"
bearer_token_env_var = "DOCS_TOKEN"
http_headers = { "X-Api-Key" = "header-secret-value" }

[mcp_servers.off]
command = "never-started"
enabled = false
"""


def test_defaults_file_flags_and_profiles(tmp_path: Path) -> None:
    _default_file(tmp_path, CONFIG)
    data = _config_json([], tmp_path)
    assert data["config_file_exists"] is True
    settings = {k: (v["value"], v["source"]) for k, v in data["settings"].items()}
    assert settings == {
        "model": ("file-model", "file"),
        "base_url": ("http://127.0.0.1:9/v1", "file"),
        "wire": ("chat", "file"),
        "api_key_env": ("FILE_KEY", "file"),
        "approval": ("on-request", "default"),
    }
    assert set(data["mcp_servers"]) == {"demo", "docs"}  # enabled = false: left out

    data = _config_json(["--profile", "work", "--wire", "responses"], tmp_path)
    settings = {k: (v["value"], v["source"]) for k, v in data["settings"].items()}
    assert settings["model"] == ("work-model", "profile work")
    assert settings["approval"] == ("never", "profile work")
    assert settings["wire"] == ("responses", "flag")
    assert settings["base_url"] == ("http://127.0.0.1:9/v1", "file")
    assert data["profile"] == {"value": "work", "source": "flag"}

    data = _config_json(["--profile", "work", "--model", "flag-model", "--approval", "untrusted"], tmp_path)
    assert data["settings"]["model"] == {"value": "flag-model", "source": "flag"}
    assert data["settings"]["approval"] == {"value": "untrusted", "source": "flag"}

    # the file's `profile` selects one without the flag
    _default_file(tmp_path, 'profile = "work"\n' + CONFIG)
    data = _config_json([], tmp_path)
    assert data["profile"] == {"value": "work", "source": "file"}
    assert data["settings"]["model"] == {"value": "work-model", "source": "profile work"}


def test_config_output_masks_secrets(tmp_path: Path) -> None:
    _default_file(tmp_path, CONFIG)
    result = _run(["config", "--model", "flag-model"], tmp_path, DOCS_TOKEN="bearer-secret-value")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for secret in ("env-secret-value", "header-secret-value", "bearer-secret-value"):
        assert secret not in out
    assert "model = flag-model  (flag)" in out
    assert "wire = chat  (file)" in out
    assert "approval = on-request  (default)" in out
    assert "DEMO_TOKEN=***" in out and "X-Api-Key=***" in out
    assert "bearer_token_env_var = DOCS_TOKEN" in out
    assert "demo (stdio, file)" in out and "docs (http, file)" in out
    data = _config_json([], tmp_path)
    assert data["mcp_servers"]["demo"]["env"] == {"DEMO_TOKEN": "***"}
    assert data["mcp_servers"]["docs"]["http_headers"] == {"X-Api-Key": "***"}
    assert data["mcp_servers"]["demo"]["args"] == ["server.py", "--flag"]
    assert data["mcp_servers"]["demo"]["tool_timeout_sec"] == 5.0


def test_explicit_file_replaces_the_default_one(tmp_path: Path) -> None:
    _default_file(tmp_path, 'model = "default-file-model"\n')
    other = _write(tmp_path / "other.toml", 'model = "other-model"\n')
    data = _config_json(["--mcp-config", str(other)], tmp_path)
    assert data["config_file"] == str(other)
    assert data["settings"]["model"] == {"value": "other-model", "source": "file"}


def test_file_settings_reach_exec(tmp_path: Path) -> None:
    """The file's endpoint is used by exec (here: a closed port, so the turn fails naming it), and
    flags override it; --script keeps the file's endpoint out."""
    _default_file(tmp_path, 'model = "file-model"\nbase_url = "http://127.0.0.1:9/v1"\n')
    result = _run(["exec", "hi", "--json", "--max-retries", "0"], tmp_path)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["model"] == "file-model"
    assert result.returncode == 1

    script = _write(tmp_path / "s.json", json.dumps({"replies": ["Done."]}))
    result = _run(["exec", "hi", "--script", str(script), "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["status"] == "completed"

    result = _run(["exec", "hi", "--script", str(script), "--json", "--approval", "bogus"], tmp_path)
    assert result.returncode == 2  # flags are still checked by argparse


# ---------------------------------------------------------------------------------------------
# MCP servers in a real run
# ---------------------------------------------------------------------------------------------


def _mcp_config(tmp_path: Path, name: str = "servers.toml") -> Path:
    return _write(
        tmp_path / name,
        f"[mcp_servers.demo]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(DEMO_SERVER)}]\n"
        'env = { DEMO_SECRET = "mcp-env-secret" }\nstartup_timeout_sec = 30\n',
    )


def _echo_script(tmp_path: Path) -> Path:
    replies = [
        {
            "items": [
                {"type": "function_call", "call_id": "c1", "name": "mcp__demo__echo", "arguments": {"text": "hello"}}
            ]
        },
        "The server said hello back.",
    ]
    return _write(tmp_path / "script.json", json.dumps({"replies": replies}))


def _check_echo_run(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    finished = [r for r in records if r["type"] == "tool_call_finished"]
    assert len(finished) == 1, records
    assert "echo: hello" in json.dumps(finished[0])
    summary = records[-1]
    assert summary["type"] == "summary" and summary["status"] == "completed"
    assert summary["last_agent_message"] == "The server said hello back."
    rollout = Path(summary["rollout"]).read_text()
    outputs = [
        json.loads(line)
        for line in rollout.splitlines()
        if '"function_call_output"' in line and '"c1"' in line and "echo: hello" in line
    ]
    assert outputs, rollout
    return summary


def test_exec_with_mcp_config_calls_the_server_tool(tmp_path: Path) -> None:
    config = _mcp_config(tmp_path)
    script = _echo_script(tmp_path)
    result = _run(["exec", "say hello", "--script", str(script), "--mcp-config", str(config), "--json"], tmp_path)
    _check_echo_run(result)


def test_default_file_servers_run_and_resume(tmp_path: Path) -> None:
    config = _mcp_config(tmp_path)
    _default_file(tmp_path, config.read_text())
    script = _echo_script(tmp_path)
    summary = _check_echo_run(_run(["exec", "say hello", "--script", str(script), "--json"], tmp_path))
    result = _run(["resume", summary["rollout"], "again", "--script", str(script), "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "echo: hello" in result.stdout
