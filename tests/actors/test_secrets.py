"""Secrets that stay secret, tested as an attacker: a scripted model makes tools print the API key
and the environment's secrets (from ``/proc/$PPID/environ``, another process's environ, a user
tool's return value, error messages, a server echoing them), and the secret must be absent from
the history, every event, the rollout's bytes, the turn outcome and what the model is sent next,
with ``[REDACTED]`` in its place. Plus the :class:`~actors.secrets.Redactor` itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import Redactor, open_session
from actors.model import ModelSettings
from actors.scripted import (
    Failed,
    FunctionCall as ScriptCall,
    HttpError,
    Reply,
    Script,
    Text,
    open_scripted_server,
)
from actors.secrets import REDACTED, RedactingClient
from actors.session import Session
from actors.tools import ToolRegistry
from actors.tools.builtin import make_shell_tool
from kernel import (
    FatalToolError,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    KernelError,
    RespondToModel,
    StreamRetry,
    ToolCallFinished,
    TurnFailed,
    Unauthorized,
    event_to_dict,
    item_to_wire,
)
from kernel.items import CustomToolCallOutput, McpToolCallOutput

MARK = "MARKER"
API_KEY = f"key-{MARK}-0f9e8d7c6b5a4939"  # no "sk-": the HTTP layer's own redaction misses it
AWS = f"aws/{MARK}+wJalrXUtnFEMIK7MDENG"
DB_PASSWORD = f'pw"{MARK}\\quoted!'  # a quote and a backslash: JSON-escaped in shell's output
GH_TOKEN = f"ghp_{MARK}_1234567890abcdefXYZ"


def _leaks(*texts: str | bytes) -> list[str]:
    """The texts that hold the marker (every secret here holds it, in any spelling)."""
    return [t if isinstance(t, str) else t.decode("utf-8", "replace") for t in texts if MARK in str(t)]


@asynccontextmanager
async def _session(
    script: Script, tools: Any, rollout: Path, transport: Any = "auto", **kw: Any
) -> AsyncIterator[tuple[Any, Session, ModelSettings]]:
    async with open_scripted_server(script) as server:
        settings = ModelSettings(base_url=server.base_url, model="scripted-model", api_key=API_KEY, transport=transport)
        async with open_session(model=settings, tools=tools, rollout=rollout, **kw) as session:
            yield server, session, settings


async def _everything(server: Any, session: Session, outcome: Any, seen: list[Any], rollout: Path) -> dict[str, str]:
    """Every record of the run, as text: history, events, rollout bytes, outcome, and the requests
    the model received (what a tool leaked would be sent back to the model)."""
    return {
        "history": json.dumps([item_to_wire(i) for i in await session.history()], ensure_ascii=False),
        "events": json.dumps([event_to_dict(e) for e in seen], ensure_ascii=False, default=repr) + repr(seen),
        "rollout": rollout.read_bytes().decode("utf-8"),
        "outcome": repr(outcome) + str(outcome.error) + repr(outcome.error),
        "requests": json.dumps([r.body for r in server.requests], ensure_ascii=False),
    }


# ---------------------------------------------------------------------------------------------
# Sessions: tool outputs
# ---------------------------------------------------------------------------------------------

leaky = ToolRegistry()


@leaky.tool
async def read_config(name: str) -> str:
    """Return a configuration value (a tool that hands the model whatever it asks for).

    Args:
        name: The environment variable.
    """
    return f"{name}={os.environ.get(name, '')}"


@leaky.tool
async def leak_key(form: str) -> Any:
    """Return the API key in some form.

    Args:
        form: "text", "items", "refuse", "crash" or "fatal".
    """
    if form == "items":
        return FunctionCallOutputPayload.from_content_items(
            [{"type": "input_text", "text": f"the key is {API_KEY}"}, {"type": "input_text", "text": "fine"}]
        )
    if form == "refuse":
        raise RespondToModel(f"refusing to print {API_KEY}")
    if form == "crash":
        raise ValueError(f"could not parse {AWS}")
    if form == "fatal":
        raise FatalToolError(f"giving up on {API_KEY}")
    return f"Authorization: Bearer {API_KEY}"


async def test_a_tool_that_returns_the_key_or_an_env_secret_records_only_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    monkeypatch.setenv("PGPASSWORD", DB_PASSWORD)
    script = Script(
        [
            Reply(
                items=[
                    ScriptCall("c1", "read_config", {"name": "AWS_SECRET_ACCESS_KEY"}),
                    ScriptCall("c2", "read_config", {"name": "PGPASSWORD"}),
                    ScriptCall("c3", "leak_key", {"form": "text"}),
                    ScriptCall("c4", "leak_key", {"form": "items"}),
                    ScriptCall("c5", "leak_key", {"form": "refuse"}),
                    ScriptCall("c6", "leak_key", {"form": "crash"}),
                ]
            ),
            Reply(items=[Text("All read.")]),
        ]
    )
    rollout = tmp_path / "rollout.jsonl"
    async with _session(script, leaky, rollout) as (server, session, _):
        async with session.subscribe() as events:
            outcome = await session.run("read the configuration")
            seen = events.take_nowait()
        records = await _everything(server, session, outcome, seen, rollout)
    assert outcome.status == "completed"
    assert not _leaks(*records.values())
    outputs = {e.call_id: e.output for e in seen if isinstance(e, ToolCallFinished)}
    texts = {k: json.dumps(item_to_wire(v)["output"]) for k, v in outputs.items()}
    assert "AWS_SECRET_ACCESS_KEY=[REDACTED]" in texts["c1"] and "PGPASSWORD=[REDACTED]" in texts["c2"]
    assert texts["c3"] == json.dumps("Authorization: Bearer [REDACTED]")
    assert "the key is [REDACTED]" in texts["c4"] and "fine" in texts["c4"]  # content items
    assert "refusing to print [REDACTED]" in texts["c5"] and "could not parse [REDACTED]" in texts["c6"]
    # the model's next request carries the redacted outputs, never the values
    assert records["requests"].count(REDACTED) >= 6
    assert REDACTED in records["rollout"] and REDACTED in records["history"]


async def test_a_fatal_tool_error_and_the_turn_failure_are_redacted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    script = Script([Reply(items=[ScriptCall("c1", "leak_key", {"form": "fatal"})])])
    rollout = tmp_path / "rollout.jsonl"
    async with _session(script, leaky, rollout) as (server, session, _):
        async with session.subscribe() as events:
            outcome = await session.run("go")
            seen = events.take_nowait()
        records = await _everything(server, session, outcome, seen, rollout)
    assert outcome.status == "failed" and str(outcome.error) == "Fatal error: giving up on [REDACTED]"
    (failed,) = [e for e in seen if isinstance(e, TurnFailed)]
    assert failed.error == "Fatal error: giving up on [REDACTED]"
    assert not _leaks(*records.values())


async def test_shell_reading_another_process_environ_outside_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process holds the secrets (in ``os.environ``); a process it started with them holds
    them in its ``/proc/<pid>/environ``; an unconfined command reads that. The values the process
    knows are scrubbed wherever the command found them, JSON-escaped spellings included."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    monkeypatch.setenv("PGPASSWORD", DB_PASSWORD)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    holder = await trio.lowlevel.open_process(["sleep", "60"], env=dict(os.environ))
    try:
        command = ["bash", "-c", f"tr '\\0' '\\n' </proc/{holder.pid}/environ"]
        script = Script(
            [Reply(items=[ScriptCall("c1", "shell", {"command": command})]), Reply(items=[Text("Read it.")])]
        )
        shell = make_shell_tool(workspace, sandbox="danger-full-access")
        rollout = tmp_path / "rollout.jsonl"
        async with _session(script, [shell], rollout) as (server, session, _):
            async with session.subscribe() as events:
                outcome = await session.run("read the holder's environment")
                seen = events.take_nowait()
            records = await _everything(server, session, outcome, seen, rollout)
    finally:
        holder.kill()
        await holder.wait()
    assert outcome.status == "completed"
    (finished,) = [e for e in seen if isinstance(e, ToolCallFinished)]
    assert isinstance(finished.output, FunctionCallOutput)
    output = json.loads(str(finished.output.output.body))["output"]
    assert "AWS_SECRET_ACCESS_KEY=[REDACTED]" in output and "PGPASSWORD=[REDACTED]" in output
    assert "PATH=" in output  # the command really read the environ block
    assert not _leaks(*records.values())


# ---------------------------------------------------------------------------------------------
# Sessions: model errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "websocket"])  # each alone: every retry is shown
async def test_a_server_echoing_secrets_in_errors_is_redacted_in_retries_failure_and_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock, transport: str
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    script = Script(
        [
            Reply(faults=[HttpError.server_error(message=f"upstream said {AWS}")]),
            Reply(items=[Text("partial")], faults=[Failed(message=f"stream broke near {AWS}")]),
            Reply(faults=[HttpError.unauthorized(message=f"Incorrect API key provided: {API_KEY}")]),
        ]
    )
    rollout = tmp_path / "rollout.jsonl"
    async with _session(script, None, rollout, transport, max_retries=3) as (server, session, _):
        async with session.subscribe() as events:
            outcome = await session.run("hello")
            seen = events.take_nowait()
        records = await _everything(server, session, outcome, seen, rollout)
    retries = [e for e in seen if isinstance(e, StreamRetry)]
    assert [r.error for r in retries] == [
        "500 Internal Server Error: upstream said [REDACTED]",
        "stream broke near [REDACTED]",  # raised while the stream was read
    ]
    assert isinstance(outcome.error, Unauthorized)
    assert "Incorrect API key provided: [REDACTED]" in str(outcome.error)
    assert [e.error for e in seen if isinstance(e, TurnFailed)] == [str(outcome.error)]
    assert not _leaks(*records.values())
    assert '"stream_retry"' in records["rollout"] and REDACTED in records["rollout"]


async def test_the_control_without_a_redactor_the_leak_is_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """``redact=Redactor()`` turns scrubbing off: the same attack then leaks (so the tests above
    would see a leak if there was one)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    script = Script(
        [Reply(items=[ScriptCall("c1", "read_config", {"name": "AWS_SECRET_ACCESS_KEY"})]), Reply(items=["ok"])]
    )
    rollout = tmp_path / "rollout.jsonl"
    async with _session(script, leaky, rollout, redact=Redactor()) as (server, session, _):
        assert not session.redactor
        outcome = await session.run("go")
        records = await _everything(server, session, outcome, [], rollout)
    assert _leaks(records["history"]) and _leaks(records["rollout"]) and _leaks(records["requests"])


async def test_redact_adds_values_and_a_plain_client_still_gets_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    monkeypatch.setenv("APP_SETTING", GH_TOKEN)  # a name nothing would guess: given explicitly
    script = Script(
        [
            Reply(
                items=[
                    ScriptCall("c1", "read_config", {"name": "APP_SETTING"}),
                    ScriptCall("c2", "read_config", {"name": "AWS_SECRET_ACCESS_KEY"}),
                ]
            ),
            Reply(items=["ok"]),
        ]
    )
    rollout = tmp_path / "rollout.jsonl"
    async with open_scripted_server(script) as server:
        from actors.model import open_model_actor

        settings = ModelSettings(base_url=server.base_url, model="scripted-model")
        async with open_model_actor(settings) as actor:
            # a plain ModelClient: the session cannot see settings, but still scrubs the environment
            async with open_session(model=actor.client(), tools=leaky, rollout=rollout, redact=[GH_TOKEN]) as session:
                assert isinstance(session.host.model, RedactingClient)
                outcome = await session.run("go")
                records = await _everything(server, session, outcome, [], rollout)
    assert outcome.status == "completed"
    assert not _leaks(*records.values())
    assert "APP_SETTING=[REDACTED]" in records["history"]
    assert "AWS_SECRET_ACCESS_KEY=[REDACTED]" in records["history"]


# ---------------------------------------------------------------------------------------------
# The attack from the issue, for real: the key in the process's initial environment
# ---------------------------------------------------------------------------------------------

_CHILD = r"""
import json, os, sys
import trio
from actors import Redactor, open_session
from actors.model import ModelSettings
from actors.scripted import FunctionCall, Reply, Script, Text, open_scripted_server
from actors.tools.builtin import make_shell_tool
from kernel import event_to_dict, item_to_wire

async def main():
    workspace, rollout, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    key = os.environ.pop("OPENAI_API_KEY")  # as the CLI does: no tool inherits it...
    os.environ.pop("GH_TOKEN")  # ...but /proc/<pid>/environ still holds both
    command = ["bash", "-c", "tr '\\0' '\\n' </proc/$PPID/environ"]
    script = Script([Reply(items=[FunctionCall("c1", "shell", {"command": command})]), Reply(items=[Text("Done.")])])
    async with open_scripted_server(script) as server:
        settings = ModelSettings(base_url=server.base_url, model="scripted-model", api_key=key)
        shell = make_shell_tool(workspace, sandbox="danger-full-access")
        redact = Redactor() if mode == "off" else None
        async with open_session(model=settings, tools=[shell], rollout=rollout, redact=redact) as session:
            async with session.subscribe() as events:
                outcome = await session.run("show me the environment")
                seen = events.take_nowait()
            history = [item_to_wire(i) for i in await session.history()]
        requests = [r.body for r in server.requests]
    json.dump({"history": history, "events": [event_to_dict(e) for e in seen], "requests": requests,
               "outcome": [outcome.status, outcome.last_agent_message, str(outcome.error)]},
              sys.stdout, default=repr)

trio.run(main)
"""


def _attack(tmp_path: Path, mode: str) -> tuple[str, str]:
    workspace = tmp_path / f"ws-{mode}"
    workspace.mkdir()
    rollout = tmp_path / f"rollout-{mode}.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        {"OPENAI_API_KEY": API_KEY, "GH_TOKEN": GH_TOKEN, "AWS_SECRET_ACCESS_KEY": AWS, "PYTHONDONTWRITEBYTECODE": "1"}
    )
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(workspace), str(rollout), mode],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, rollout.read_bytes().decode("utf-8")


def test_the_key_read_from_proc_ppid_environ_never_reaches_a_record(tmp_path: Path) -> None:
    """The issue's attack: the session process got ``OPENAI_API_KEY`` (and ``GH_TOKEN``) in its
    environment and popped them from ``os.environ``; the kernel still shows them in
    ``/proc/<pid>/environ``, and an unconfined ``tr '\\0' '\\n' </proc/$PPID/environ`` reads them
    (and ``AWS_SECRET_ACCESS_KEY``, never popped). Nothing recorded holds any of them: not the
    history, the events, the turn outcome, the rollout, nor what the model is sent next."""
    stdout, rollout = _attack(tmp_path, "on")
    assert not _leaks(stdout, rollout)
    run = json.loads(stdout)
    assert run["outcome"] == ["completed", "Done.", "None"]
    (finished,) = [e for e in run["events"] if e["type"] == "tool_call_finished"]
    output = json.loads(finished["output"]["output"])["output"]
    for name in ("OPENAI_API_KEY", "GH_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert f"{name}=[REDACTED]" in output  # read, then scrubbed
    redacted_line = "OPENAI_API_KEY" + "=[REDACTED]"  # spelled in two parts: not a key assignment
    assert redacted_line in json.dumps(run["requests"][1])
    assert redacted_line in rollout

    # the control: with scrubbing turned off the very same run leaks all three
    stdout, rollout = _attack(tmp_path, "off")
    for secret in (API_KEY, GH_TOKEN, AWS):
        assert secret in stdout and secret in rollout


# ---------------------------------------------------------------------------------------------
# The Redactor
# ---------------------------------------------------------------------------------------------


def test_redactor_replaces_each_secret_longest_first_and_ignores_short_values() -> None:
    r = Redactor(["abcdefgh", "abcdefghijkl", "short", "", "zzzzzzzz"])
    assert r.redact("x abcdefghijkl y abcdefgh z zzzzzzzz") == "x [REDACTED] y [REDACTED] z [REDACTED]"
    assert r.redact("short stays") == "short stays"
    assert "short" not in r.secrets and len(r) == 3
    clean = "nothing to see here"
    assert r.redact(clean) is clean and not r.found_in(clean) and r.found_in("..zzzzzzzz..")
    assert Redactor().redact(clean) is clean and not Redactor()
    assert "abcdefgh" not in repr(r) and repr(r) == "Redactor(<3 secret spellings>)"


def test_redactor_matches_json_escaped_and_stripped_spellings() -> None:
    r = Redactor([DB_PASSWORD, "  padded-secret-1234\n"])
    text = json.dumps({"output": f"PGPASSWORD={DB_PASSWORD}", "x": "padded-secret-1234"})
    assert MARK not in r.redact(text) and "padded-secret" not in r.redact(text)
    assert json.loads(r.redact(text)) == {"output": "PGPASSWORD=[REDACTED]", "x": "[REDACTED]"}
    assert r.redact(f"raw {DB_PASSWORD} end") == "raw [REDACTED] end"
    unicode = Redactor(["pässwörd-geheim"])
    assert unicode.redact(json.dumps("pässwörd-geheim")) == '"[REDACTED]"'  # \u00e4 spelling


def test_redactor_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError, match="not one string"):
        Redactor("abcdefghij")  # a str is iterable: it would be split into characters
    with pytest.raises(TypeError, match="must be a str"):
        Redactor([b"abcdefghij"])  # type: ignore[list-item]


def test_from_settings_collects_key_secret_headers_and_withheld_environment() -> None:
    settings = ModelSettings(
        base_url="http://127.0.0.1:1/v1",
        model="m",
        api_key=API_KEY,
        extra_headers=(
            ("Authorization", "Basic dXNlcjpwYXNzd29yZA=="),
            ("X-Api-Key", "header-key-0123456789"),
            ("Cookie", "session=cookie-value-xyz"),
            ("OpenAI-Beta", "responses=experimental"),  # not a secret
        ),
    )
    environ = {
        "HOME": "/home/someone",
        "AWS_SECRET_ACCESS_KEY": AWS,
        "PGPASSWORD": DB_PASSWORD,
        "DATABASE_URL": "postgres://app:db-pass-9876@db.internal/app",
        "GH_PAT": "github_pat_0123456789",
        "PIP_KEYRING_PROVIDER": "subprocess",  # one plain word: a setting, not a secret
        "SHORT_TOKEN": "abc",
    }
    r = Redactor.from_settings(settings, environ)
    for secret in (
        API_KEY,
        "Basic dXNlcjpwYXNzd29yZA==",
        "dXNlcjpwYXNzd29yZA==",
        "header-key-0123456789",
        "session=cookie-value-xyz",
        AWS,
        DB_PASSWORD,
        "postgres://app:db-pass-9876@db.internal/app",
        "github_pat_0123456789",
    ):
        assert secret in r.secrets, secret
    for kept in ("responses=experimental", "/home/someone", "subprocess", "abc"):
        assert kept not in r.secrets
    # a dict environment does not read /proc/self/environ unless asked
    assert not Redactor.from_settings(None, {}) and len(Redactor.from_settings(None, None)) == 0
    assert Redactor.from_settings(None, {}, extra=["explicit-secret-1"]).secrets == ("explicit-secret-1",)
    assert r.with_secrets(["another-secret-42"]).found_in("x another-secret-42") and r.with_secrets([]) is r


def test_from_settings_reads_the_process_initial_environment(tmp_path: Path) -> None:
    """A key popped from ``os.environ`` is still known: ``/proc/self/environ`` holds it."""
    child = (
        "import os; from actors import Redactor; key = os.environ.pop('OPENAI_API_KEY'); "
        "print(key in Redactor.from_settings().secrets, key in Redactor.from_settings(None, {}).secrets, "
        "key in Redactor.from_settings(None, None, process_environ=True).secrets)"
    )
    env = {**os.environ, "OPENAI_API_KEY": API_KEY}
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "True"], out.stderr


def test_redact_output_covers_every_tool_output_shape() -> None:
    r = Redactor([API_KEY])
    text = FunctionCallOutput("c", FunctionCallOutputPayload(f"k={API_KEY}", True))
    assert r.redact_output(text) == FunctionCallOutput("c", FunctionCallOutputPayload("k=[REDACTED]", True))
    items = CustomToolCallOutput(
        "c",
        FunctionCallOutputPayload.from_content_items(
            [{"type": "input_text", "text": API_KEY}, {"type": "input_image", "image_url": "data:x"}], False
        ),
        name="n",
    )
    out = r.redact_output(items)
    assert isinstance(out, CustomToolCallOutput) and out.name == "n" and out.output.success is False
    assert out.output.body == ({"type": "input_text", "text": REDACTED}, {"type": "input_image", "image_url": "data:x"})
    mcp = McpToolCallOutput(call_id="c", output={"content": [{"type": "text", "text": f"t {API_KEY}"}]})
    assert MARK not in repr(r.redact_output(mcp))
    clean = FunctionCallOutput("c", FunctionCallOutputPayload("nothing", True))
    assert r.redact_output(clean) is clean and Redactor().redact_output(text) is text


def test_redact_exception_scrubs_messages_in_place_even_in_groups() -> None:
    r = Redactor([API_KEY])
    kernel = KernelError(f"bad key {API_KEY}")
    respond = RespondToModel(f"no {API_KEY}")
    group = ExceptionGroup("g", [kernel, respond, ValueError(f"v {API_KEY}")])
    r.redact_exception(group)
    assert str(kernel) == "bad key [REDACTED]" and kernel.args == ("bad key [REDACTED]",)
    assert respond.message == "no [REDACTED]" and MARK not in repr(group.exceptions)


async def test_redacting_client_scrubs_errors_and_forwards_fallback() -> None:
    class Fallback:
        model = "inner-model"
        switched = False

        def has_fallback(self) -> bool:
            return not self.switched

        def try_switch_fallback_transport(self) -> bool:
            self.switched = True
            return True

        @asynccontextmanager
        async def stream(self, prompt: Any) -> AsyncIterator[Any]:
            async def batches() -> AsyncIterator[Any]:
                yield []
                raise KernelError(f"mid-stream {API_KEY}")

            yield batches()

    inner = Fallback()
    client = RedactingClient(inner, Redactor([API_KEY]))
    assert client.model == "inner-model" and MARK not in repr(client)
    assert client.has_fallback() and client.try_switch_fallback_transport() and not client.has_fallback()
    with pytest.raises(KernelError, match=r"^mid-stream \[REDACTED\]$"):
        async with client.stream(None) as batches:  # type: ignore[arg-type]
            async for _ in batches:
                pass
