"""``exec`` and ``resume``: choose the model, the workspace and the rollout, run one turn in a
session while rendering its events, handle Ctrl-C, and print the summary.

Signals: SIGINT and SIGTERM are received by a task (``trio.open_signal_receiver``), never raised
as ``KeyboardInterrupt`` in the middle of the loop. The first one interrupts the turn the way
``session.interrupt()`` does: running tools are cancelled (the shell tool kills its process
group), every call in flight gets an aborted output, ``TurnAborted`` is recorded and the rollout
is fsynced and closed as the session exits. A second one cancels everything at once (the turn
still records its aborted outputs on the way out).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import MutableMapping
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

from actors.model import ModelActor, ModelSettings, open_model_actor
from actors.scripted import Script, ScriptError, open_scripted_server
from actors.session import Session, TurnHandle, open_session
from actors.tools.approvals import ApprovalPolicy, Approvals
from actors.tools.builtin import builtin_tools
from actors.tools.sandbox import SandboxPolicy, SandboxUnavailable
from kernel import TokenUsage, TurnAborted, TurnCompleted, TurnFailed

from ._approver import TerminalApprover
from ._demo import DEMO_CONTEXT_WINDOW, DEMO_MODEL, DEMO_SCRIPT
from ._render import Console, HumanRenderer, JsonRenderer, Tally

__all__ = ["CliError", "ModelChoice", "choose_model", "rollouts_dir", "run_task"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
_FINAL_EVENTS = (TurnCompleted, TurnAborted, TurnFailed)


class CliError(Exception):
    """A problem reported as one line on stderr; ``status`` is the exit status."""

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# Model selection
# ---------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ModelChoice:
    """Where the model is: the built-in demo script, a ``--script`` file (both served in-process
    on 127.0.0.1), or a real endpoint."""

    kind: Literal["demo", "script", "endpoint"]
    model: str
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    script: Script | None = None

    @property
    def label(self) -> str:
        if self.kind == "demo":
            return f"{self.model} (built-in demo, offline)"
        if self.kind == "script":
            return f"{self.model} (scripted)"
        return f"{self.model} @ {self.base_url}"


def choose_model(args: Any, environ: MutableMapping[str, str]) -> ModelChoice:
    """The model the flags select. The API key variable is removed from ``environ`` whatever the
    choice, so no tool process the session starts inherits it. Raises :class:`CliError`."""
    key_var = args.api_key_env
    api_key = environ.pop(key_var, None) or None
    if args.script and args.base_url:
        raise CliError("--script and --base-url exclude each other: a script runs its own local server", status=2)
    if args.base_url or (args.model and not args.script):
        base_url = args.base_url or environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
        if not args.model:
            raise CliError("--base-url needs --model NAME (the model the endpoint serves)", status=2)
        if api_key is None and base_url.startswith(OPENAI_BASE_URL):
            raise CliError(f"no API key: set {key_var} (or name another variable with --api-key-env)")
        try:
            ModelSettings(
                base_url=base_url,
                model=args.model,
                wire=args.wire,
                idle_timeout=args.idle_timeout,
                transport=transport_choice(args),
            )
        except ValueError as exc:
            raise CliError(str(exc), status=2) from None
        return ModelChoice(kind="endpoint", model=args.model, base_url=base_url, api_key=api_key)
    if args.script:
        try:
            script = Script.from_json(args.script)
        except ScriptError as exc:
            raise CliError(f"cannot load script {args.script}: {exc}") from None
        except OSError as exc:
            raise CliError(f"cannot read script {args.script}: {exc.strerror or exc}") from None
        return ModelChoice(kind="script", model=args.model or script.model, script=script, api_key=api_key)
    return ModelChoice(kind="demo", model=DEMO_MODEL, script=DEMO_SCRIPT, api_key=api_key)


# ---------------------------------------------------------------------------------------------
# Workspace and rollout
# ---------------------------------------------------------------------------------------------


def rollouts_dir(environ: MutableMapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/agent-kernel/rollouts`` (an absolute ``XDG_DATA_HOME`` only), else
    ``~/.local/share/agent-kernel/rollouts``."""
    xdg = environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "agent-kernel" / "rollouts"


def _rollout_name(stamp: str, session_id: str) -> str:
    return f"rollout-{stamp}-{session_id}.jsonl"


def _new_rollout(args: Any, environ: MutableMapping[str, str]) -> tuple[Path, str | None]:
    """(path to create, timestamp) — the timestamp is set when the file is to be renamed after
    the session id once the session has one (the default location)."""
    if args.rollout:
        path = Path(args.rollout).expanduser().absolute()
        if path.exists():
            raise CliError(f'{path} already exists: continue it with `agent-kernel resume {path} "..."`')
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
        return path, None
    directory = rollouts_dir(environ)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CliError(f"cannot create the rollout directory {directory}: {exc.strerror or exc}") from None
    stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    return directory / _rollout_name(stamp, f"pending-{uuid.uuid4()}"), stamp


def _rename_rollout(path: Path, stamp: str, session_id: str) -> Path:
    """Name the new rollout after its session (the id is known once the session is open)."""
    final = path.with_name(_rollout_name(stamp, session_id))
    if final.exists():
        return path
    try:
        os.rename(path, final)  # the open descriptor keeps appending to the renamed file
    except OSError:
        return path
    return final


def _header_cwd(rollout: Path) -> str | None:
    try:
        with open(rollout, "rb") as f:
            header = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    cwd = header.get("cwd") if isinstance(header, dict) else None
    return cwd if isinstance(cwd, str) and cwd else None


def _choose_workspace(args: Any, choice: ModelChoice, resume_from: Path | None) -> tuple[Path, bool]:
    """(workspace, whether it is a fresh temporary directory)."""
    if args.cwd:
        path = Path(args.cwd).expanduser().resolve()
        if not path.is_dir():
            raise CliError(f"--cwd {args.cwd}: not a directory", status=2)
        return path, False
    if resume_from is not None:
        recorded = _header_cwd(resume_from)
        if recorded and os.path.isdir(recorded):
            return Path(recorded), False
    if choice.kind == "demo":
        return Path(tempfile.mkdtemp(prefix="agent-kernel-demo-")).resolve(), True
    return Path.cwd().resolve(), False


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@attrs.define
class _Run:
    """State shared by the run and its signal watcher."""

    force: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    handle: TurnHandle | None = None
    signal: int | None = None
    session: Session | None = None
    actor: ModelActor | None = None
    rollout: Path | None = None
    usage: TokenUsage = attrs.field(factory=TokenUsage)
    model_requests: int = 0


async def _watch_signals(signals: Any, run: _Run, renderer: HumanRenderer | JsonRenderer) -> None:
    async for signum in signals:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if run.signal is None:
            run.signal = signum
            if run.handle is not None and not run.handle.done:
                renderer.note(f"{name}: interrupting the turn (again to stop at once)")
                run.handle.interrupt()
            else:
                run.force.cancel()
        else:
            renderer.note(f"{name}: stopping")
            run.force.cancel()


async def run_task(args: Any, console: Console, task: str, resume_from: Path | None = None) -> int:
    """Run ``task`` as one turn (continuing the rollout ``resume_from`` if given) and return the
    exit status: 0 completed, 1 failed, 130 interrupted (143 on SIGTERM)."""
    environ = os.environ
    choice = choose_model(args, environ)
    console.add_secret(choice.api_key)
    from ._config import mcp_servers

    specs = getattr(args, "mcp_specs", None) or []
    servers = mcp_servers(specs)
    for spec in specs:
        for secret in spec.secrets():
            console.add_secret(secret)
    workspace, temporary = _choose_workspace(args, choice, resume_from)
    if resume_from is not None:
        rollout, stamp = resume_from, None
    else:
        rollout, stamp = _new_rollout(args, environ)
    renderer: HumanRenderer | JsonRenderer = JsonRenderer(console) if args.json else HumanRenderer(console)
    approver = TerminalApprover(console)
    approvals = Approvals(ApprovalPolicy(args.approval), approver)
    policy = SandboxPolicy(mode=args.sandbox, network_access=args.network)
    try:
        tools = builtin_tools(workspace, approvals=approvals, sandbox=policy)
    except SandboxUnavailable as exc:
        raise CliError(f"{exc} (--sandbox danger-full-access)", status=2) from None
    if temporary and args.json:
        renderer.note(f"agent-kernel: demo workspace: {workspace}")

    run = _Run()
    tally = Tally()
    started = time.monotonic()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, run, renderer)
            nursery.start_soon(renderer.run_spinner)
            try:
                with run.force:
                    await _session(
                        args,
                        choice,
                        task,
                        workspace,
                        temporary,
                        rollout,
                        stamp,
                        resume_from,
                        tools,
                        servers,
                        approvals,
                        renderer,
                        tally,
                        run,
                    )
            finally:
                if run.session is not None:
                    run.usage = run.session.total_usage
                if run.actor is not None:
                    run.model_requests = run.actor.requests_started
                nursery.cancel_scope.cancel()
    elapsed = time.monotonic() - started

    outcome = run.handle.outcome if run.handle is not None and run.handle.done else None
    status = outcome.status if outcome is not None else "aborted"
    if status == "completed":
        code = 0
    elif status == "failed":
        code = 1
    else:
        code = 143 if run.signal == signal.SIGTERM else 130
    summary: dict[str, Any] = {
        "status": status,
        "exit_code": code,
        "session_id": run.session.session_id if run.session is not None else None,
        "model": choice.model,
        "turns": tally.turns,
        "model_requests": run.model_requests,
        "tool_calls": tally.tool_calls,
        "tool_failures": tally.tool_failures,
        "retries": tally.retries,
        "usage": attrs.asdict(run.usage),
        "wall_time_seconds": round(elapsed, 3),
        "rollout": os.fspath(run.rollout) if run.rollout is not None else None,
        "workspace": os.fspath(workspace),
        "last_agent_message": outcome.last_agent_message if outcome is not None else None,
    }
    if outcome is not None and outcome.error is not None:
        summary["error"] = str(outcome.error)
        summary["error_type"] = type(outcome.error).__name__
    renderer.summary(summary)
    return code


async def _session(
    args: Any,
    choice: ModelChoice,
    task: str,
    workspace: Path,
    temporary: bool,
    rollout: Path,
    stamp: str | None,
    resume_from: Path | None,
    tools: list[Any],
    servers: list[Any],
    approvals: Approvals,
    renderer: HumanRenderer | JsonRenderer,
    tally: Tally,
    run: _Run,
) -> None:
    approver = approvals.approver
    assert isinstance(approver, TerminalApprover)
    async with AsyncExitStack() as stack:
        base_url = choice.base_url
        if choice.script is not None:
            server = await stack.enter_async_context(open_scripted_server(choice.script, record_requests=False))
            base_url = server.base_url
        assert base_url is not None
        settings = model_settings(
            args,
            choice,
            base_url,
            stream_max_retries=args.max_retries,
            # the demo's model "has" a small window: its history is compacted once
            context_window=DEMO_CONTEXT_WINDOW if choice.kind == "demo" else None,
        )
        actor = run.actor = await stack.enter_async_context(open_model_actor(settings))
        # the MCP servers' env and header values are secrets too: scrubbed like the key
        secrets = [secret for server in servers for secret in server.secrets()]
        # the session scrubs the key (and the environment's secrets) from tool outputs, model
        # errors and failures before its events, the rollout or this terminal see them
        session = run.session = await stack.enter_async_context(
            open_session(
                model=actor,
                tools=tools,
                rollout=rollout,
                resume=resume_from is not None,
                max_retries=args.max_retries,
                cwd=workspace,
                redact=secrets,
                mcp_servers=servers or None,
                mcp_approvals=approvals,
                mcp_elicit=approver.elicit,
                mcp_sample_approve=approver.sampling_approver(args.approval),
            )
        )
        run.rollout = rollout if stamp is None else _rename_rollout(rollout, stamp, session.session_id)
        fields = [
            ("model", choice.label),
            ("workspace", os.fspath(workspace) + (" (new, temporary)" if temporary else "")),
        ]
        fields.append(("approval", str(args.approval)))
        if servers:
            fields.append(("mcp", ", ".join(server.name for server in servers)))
        if resume_from is not None:
            fields.append(("resumed", os.fspath(resume_from)))
        renderer.header(fields, task)
        async with session.subscribe() as events:
            handle = run.handle = await session.submit(task)
            if isinstance(renderer, HumanRenderer):
                renderer.started = time.monotonic()
            async for event in events:
                tally.add(event)
                renderer.event(event)
                if isinstance(event, _FINAL_EVENTS) and event.turn_id == handle.turn_id:
                    break
        await handle.result()


def model_settings(args: Any, choice: ModelChoice, base_url: str, **more: Any) -> ModelSettings:
    """The :class:`ModelSettings` of the chosen model and the model flags (``--wire``,
    ``--idle-timeout``, ``--transport``); ``more`` adds settings or overrides these."""
    fields: dict[str, Any] = dict(
        base_url=base_url,
        model=choice.model,
        api_key=choice.api_key,
        wire=args.wire,
        idle_timeout=args.idle_timeout,
        transport=transport_choice(args),
    )
    fields.update(more)
    return ModelSettings(**fields)


def transport_choice(args: Any) -> Literal["auto", "websocket", "http"]:
    """``--transport``; ``auto`` on the Chat wire is HTTP (WebSocket mode is a Responses feature)."""
    choice: Literal["auto", "websocket", "http"] = getattr(args, "transport", "auto")
    if choice == "websocket" and args.wire == "chat":
        raise CliError("--transport websocket needs --wire responses (Chat Completions is HTTP only)", status=2)
    return choice
