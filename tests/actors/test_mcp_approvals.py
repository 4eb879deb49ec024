"""MCP tool calls under the approval policy (the server's annotations decide, and are shown),
and the command line answering an MCP server on the terminal: elicitation as a form, sampling as
a y/n question — over a real pseudo-terminal, against real server processes."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.cli._approver import _fill_form, parse_field
from actors.model import ModelSettings
from actors.scripted import FunctionCall, Reply, Script, open_scripted_server
from actors.session import open_session
from actors.tools.approvals import ApprovalPolicy, ApprovalRequest, Approvals
from actors.tools.mcp import ElicitAnswer

from .test_mcp_shared import outputs, stub

INTERACTIVE = str(Path(__file__).parent / "mcp_servers" / "interactive_server.py")


def mcp_request(*hints: str) -> ApprovalRequest:
    return ApprovalRequest(kind="mcp", tool="mcp__s__t", server="s", arguments='{"a": 1}', hints=hints)


@pytest.mark.parametrize(
    ("policy", "hints", "asks"),
    [
        ("never", ("destructive",), False),
        ("on-request", (), False),
        ("on-request", ("not read-only", "destructive"), True),
        ("on-request", ("read-only", "destructive"), False),  # read-only wins (the spec's reading)
        ("untrusted", (), True),
        ("untrusted", ("not destructive",), True),
        ("untrusted", ("read-only",), False),
    ],
)
def test_the_policy_reads_the_servers_annotations(policy: str, hints: tuple[str, ...], asks: bool) -> None:
    request = mcp_request(*hints)
    assert Approvals(ApprovalPolicy(policy)).needs_approval(request) is asks
    assert request.describe() == "the MCP tool `mcp__s__t` of server `s`"


async def test_untrusted_asks_before_a_tool_not_marked_read_only_and_a_refusal_never_reaches_the_server() -> None:
    asked: list[ApprovalRequest] = []
    answers = iter([False, True])

    async def approver(request: ApprovalRequest) -> bool:
        asked.append(request)
        return next(answers)

    script = Script(
        [
            Reply(
                items=[
                    FunctionCall("c1", "mcp__stub__echo", {"payload": "read"}),  # read-only: not asked
                    FunctionCall("c2", "mcp__stub__count", {"payload": "x"}),  # refused
                ]
            ),
            Reply(items=[FunctionCall("c3", "mcp__stub__count", {"payload": "y"})]),  # approved
            Reply(items=["done"]),
        ]
    )
    with trio.fail_after(60):
        async with open_scripted_server(script) as server:
            settings = ModelSettings(base_url=server.base_url, model="m", transport="http")
            async with open_session(
                model=settings, mcp_servers=[stub()], mcp_approvals=Approvals("untrusted", approver)
            ) as session:
                outcome = await session.run("go")
            first, second = (outputs(r) for r in server.requests[1:3])
    assert outcome.last_agent_message == "done"
    assert first[0] == "read" and "rejected by user" in first[1] and "mcp__stub__count" in first[1]
    assert second[-1] == "count=1 payload=y"  # the refused call never reached the server
    assert [(r.kind, r.tool, r.server, r.arguments) for r in asked] == [
        ("mcp", "mcp__stub__count", "stub", '{"payload":"x"}'),
        ("mcp", "mcp__stub__count", "stub", '{"payload":"y"}'),
    ]
    assert asked[0].hints == () and "untrusted" in asked[0].reason


# --- the terminal's form ---------------------------------------------------------------------


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "title": "Name"},
        "age": {"type": "integer", "description": "in years"},
        "member": {"type": "boolean"},
        "plan": {"type": "string", "enum": ["free", "pro"]},
        "note": {"type": "string"},
    },
    "required": ["name", "age", "member", "plan"],
}


def scripted_ask(answers: list[str]) -> tuple[Any, list[str]]:
    shown: list[str] = []
    pending = iter(answers)

    def ask(text: str) -> str:
        shown.append(text)
        return next(pending) + "\n"

    return ask, shown


def test_the_form_asks_each_field_and_reasks_a_bad_answer() -> None:
    from actors.cli._approver import _form_fields

    ask, shown = scripted_ask(["y", "Ada", "thirty", "36", "yes", "gold", "pro", ""])
    answer = _fill_form(ask, "MCP server 's' asks: who?\nAnswer? [y/N] ", _form_fields(SCHEMA))
    assert answer == ElicitAnswer.accept({"name": "Ada", "age": 36, "member": True, "plan": "pro"})
    assert shown[1] == "  Name: " and shown[2] == "  age (in years): "
    assert shown[3] == "  (expected a whole number) age: " and shown[6] == "  (expected one of free, pro) plan: "
    assert shown[-1] == "  note [optional]: "


def test_the_form_declines_or_cancels() -> None:
    from actors.cli._approver import _form_fields

    fields = _form_fields(SCHEMA)
    ask, _ = scripted_ask(["n"])
    assert _fill_form(ask, "?", fields) == ElicitAnswer.decline()
    ask, _ = scripted_ask(["y", "", "", ""])  # a required field left empty three times
    assert _fill_form(ask, "?", fields) == ElicitAnswer.cancel()


def test_parse_field() -> None:
    assert parse_field(" 2.5 ", {"type": "number"}) == 2.5
    assert parse_field("no", {"type": "boolean"}) is False
    assert parse_field("x y", {}) == "x y"
    with pytest.raises(ValueError, match="a number"):
        parse_field("many", {"type": "number"})


# --- the command line on a pseudo-terminal -------------------------------------------------------


def run_on_a_terminal(args: list[str], answers: str, tmp_path: Path) -> tuple[int, str, str]:
    """Run ``agent-kernel ARGS`` with a pseudo-terminal as stdin and stderr (where the prompts go
    without a controlling terminal) and stdout piped; type ``answers`` as the prompts come."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), XDG_CONFIG_HOME=str(tmp_path / "cfg"), NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", *args],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=tmp_path,
        env=env,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
        text=True,
    )
    os.close(slave)
    seen: list[bytes] = []
    lines = iter(answers.splitlines(keepends=True))

    def converse() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            seen.append(data)
            if data.endswith((b"] ", b": ")):  # a prompt (echoed answers end with a newline)
                answer = next(lines, None)
                if answer is not None:
                    os.write(master, answer.encode())

    reader = threading.Thread(target=converse, daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=90)
    finally:
        reader.join(5)
        os.close(master)
    return proc.returncode, stdout, b"".join(seen).decode(errors="replace")


ASK = {"type": "function_call", "call_id": "c1", "name": "mcp__ia__ask", "arguments": {}}
SUMMARISE = {"type": "function_call", "call_id": "c2", "name": "mcp__ia__summarise", "arguments": {"text": "t"}}


def interactive_setup(tmp_path: Path, replies: list[Any]) -> tuple[Path, Path]:
    """A config file naming the interactive FastMCP server, and a script of ``replies``."""
    config = tmp_path / "config.toml"
    config.write_text(f"[mcp_servers.ia]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(INTERACTIVE)}]\n")
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": replies}))
    return config, script


def test_exec_answers_an_elicitation_and_a_sampling_request_on_the_terminal(tmp_path: Path) -> None:
    replies = [{"items": [ASK]}, {"items": [SUMMARISE]}, "In short: t.", "Thanks, Ada."]
    config, script = interactive_setup(tmp_path, replies)
    code, stdout, terminal = run_on_a_terminal(
        [
            "exec",
            "who am I?",
            "--script",
            str(script),
            "--mcp-config",
            str(config),
            "--json",
            "--approval",
            "on-request",
        ],
        "y\nAda\n36\ny\n",
        tmp_path,
    )
    assert code == 0, (stdout, terminal)
    assert "MCP server 'ia' asks: Who are you?" in terminal and "asks to use the model (sampling)" in terminal
    records = [json.loads(line) for line in stdout.splitlines()]
    finished = {r["call_id"]: json.dumps(r["output"]) for r in records if r["type"] == "tool_call_finished"}
    assert "hello Ada, 36" in finished["c1"]
    assert "said: In short: t." in finished["c2"]
    assert records[-1]["last_agent_message"] == "Thanks, Ada."


def test_without_a_terminal_the_cli_declines_and_refuses(tmp_path: Path) -> None:
    config, script = interactive_setup(tmp_path, [{"items": [ASK, SUMMARISE]}, "ok"])
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), XDG_CONFIG_HOME=str(tmp_path / "cfg"), NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "actors.cli", "exec", "go", "--script", str(script), "--mcp-config", str(config)]
        + ["--json", "--approval", "on-request"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    finished = {
        r["call_id"]: json.dumps(r["output"])
        for r in map(json.loads, result.stdout.splitlines())
        if r["type"] == "tool_call_finished"
    }
    assert "no answer: decline" in finished["c1"]
    assert "sampling failed" in finished["c2"] and "declined" in finished["c2"]
    assert "stdin is not a terminal" in result.stderr
