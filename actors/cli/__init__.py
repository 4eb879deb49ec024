"""The ``agent-kernel`` command line.

::

    agent-kernel exec ["task"]                 # the built-in demo: a scripted model, no key, no network
    agent-kernel exec "task" --base-url URL --model NAME [--wire chat]   # a real endpoint ($OPENAI_API_KEY)
    agent-kernel exec "task" --script FILE.json                          # a custom scripted model
    agent-kernel exec ... --json               # one JSON event per line, then {"type": "summary", ...}
    agent-kernel resume ROLLOUT "next task"    # continue a session from its rollout
    agent-kernel history ROLLOUT [--json] [--full]
    agent-kernel serve-scripted --port P --script FILE.json
    agent-kernel batch TASKS.jsonl --out DIR [--concurrency N] [--rpm R] [--tpm T] [--ray [ADDRESS]]
    agent-kernel config [--profile NAME] [--mcp-config FILE] [--json]   # the settings in force, and why

Settings file: ``$XDG_CONFIG_HOME/agent-kernel/config.toml`` (or ``--mcp-config FILE``): model settings,
``[profiles.NAME]`` (``--profile``) and ``[mcp_servers.NAME]`` (exec / resume / batch); flags override it (see
``_config``).

Exit status: 0 the turn completed, 1 it failed (or the command could not start), 2 bad usage,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Errors are one line on stderr, never a
traceback (``AGENT_KERNEL_DEBUG=1`` shows one). The API key is read from the environment,
removed from it (tools never inherit it), and scrubbed from everything the command writes.

Layout: ``_run`` (exec / resume), ``_render`` (terminal and ``--json`` output), ``_approver``
(the y/n approval prompt), ``_history`` (``history``), ``_demo`` (the demo script), ``_batch``
(``batch``; its own exit statuses are in its docstring), ``_config`` (the config file).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from ._render import Console

__all__ = ["main", "build_parser"]

_PROG = "agent-kernel"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("trio-agent-kernel")
    except Exception:
        return "unknown"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def _model_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group(
        "model (default: the built-in demo, a scripted model served on 127.0.0.1: no key, no network)"
    )
    g.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1")
    g.add_argument("--model", metavar="NAME", help="the model name (with --base-url; alone: api.openai.com)")
    g.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (default: OPENAI_API_KEY)",
    )
    g.add_argument(
        "--wire",
        choices=("responses", "chat"),
        help="Responses API (default) or Chat Completions (vLLM, Ollama, llama.cpp, LM Studio…)",
    )
    g.add_argument(
        "--transport",
        choices=("auto", "websocket", "http"),
        default="auto",
        help="auto (default: on the Responses wire WebSocket first, HTTP when the endpoint has no WebSocket mode "
        "or the retries are spent on it), websocket, or http; the Chat wire is HTTP only",
    )
    g.add_argument("--script", metavar="FILE", help="run a scripted model from a JSON script (see actors.scripted)")
    g.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=300.0,
        help="seconds without a byte before the stream counts as broken (default: 300)",
    )
    g.add_argument(
        "--max-retries",
        metavar="N",
        type=_non_negative_int,
        default=5,
        help="retries of a failed model request (default: 5)",
    )
    return p


def _config_options(*, mcp: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group(
        "configuration (default file: $XDG_CONFIG_HOME/agent-kernel/config.toml; flags override it)"
    )
    names = ("--mcp-config", "--config") if mcp else ("--config",)
    g.add_argument(
        *names,
        dest="config_file",
        metavar="FILE",
        help="read this TOML file instead of the default one: model settings, [profiles.NAME]"
        + (" and [mcp_servers.NAME]" if mcp else ""),
    )
    g.add_argument("--profile", metavar="NAME", help="use the settings of [profiles.NAME] in the config file")
    return p


def _approval_option() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--approval",
        choices=("never", "on-request", "untrusted"),
        help="when to ask before running commands and patches (default: on-request)",
    )
    return p


def _run_options(*, rollout: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("run")
    g.add_argument(
        "--cwd",
        metavar="DIR",
        help="workspace root for the tools (default: the current directory; the demo: a new temporary directory)",
    )
    g.add_argument(
        "--approval",
        choices=("never", "on-request", "untrusted"),
        help="when to ask before running commands and patches (default: on-request)",
    )
    g.add_argument(
        "--sandbox",
        choices=("read-only", "workspace-write", "danger-full-access"),
        default="workspace-write",
        help="what commands and patches may touch (default: workspace-write: the workspace, no network)",
    )
    g.add_argument(
        "--network",
        action="store_true",
        help="let workspace-write commands use the network",
    )
    if rollout:
        g.add_argument(
            "--rollout",
            metavar="PATH",
            help="write the session's JSONL rollout here (default: $XDG_DATA_HOME/agent-kernel/rollouts/)",
        )
    g.add_argument("--json", action="store_true", help="print one JSON object per event (and a summary) on stdout")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``agent-kernel`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Run LLM agent tasks on trio-agent-kernel: streaming, tool calls (shell, apply_patch), "
        "retries, approvals, resumable JSONL rollouts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "exec",
        parents=[_model_options(), _run_options(rollout=True), _config_options(mcp=True)],
        help="run one task to completion",
        description="Run one task to completion, streaming to the terminal. Without model flags: the built-in "
        "demo in a new temporary workspace.",
    )
    p.add_argument("task", nargs="?", help="the task ('-' reads it from stdin; optional for the demo)")
    p.set_defaults(func=_cmd_exec, configured=True)

    p = sub.add_parser(
        "resume",
        parents=[_model_options(), _run_options(rollout=False), _config_options(mcp=True)],
        help="continue a session from its rollout",
        description="Continue a session from its rollout with a new task (appends to the same rollout). The "
        "workspace defaults to the one the rollout records.",
    )
    p.add_argument("rollout_path", metavar="ROLLOUT", help="the rollout (.jsonl) to continue")
    p.add_argument("task", help="the next task ('-' reads it from stdin)")
    p.set_defaults(func=_cmd_resume, configured=True)

    p = sub.add_parser("history", help="print a rollout", description="Print a rollout: header, items, turn events.")
    p.add_argument("rollout_path", metavar="ROLLOUT")
    p.add_argument("--json", action="store_true", help="print the records as JSON lines")
    p.add_argument("--full", action="store_true", help="do not shorten tool outputs and patches")
    p.set_defaults(func=_cmd_history)

    p = sub.add_parser(
        "compact",
        parents=[_model_options(), _config_options(mcp=False)],
        help="compact a rollout's history now",
        description="Compact a saved session's history (remote /responses/compact where the endpoint serves it, "
        "else a summary by the model) and record it in the rollout; resume and history start from it.",
    )
    p.add_argument("rollout_path", metavar="ROLLOUT", help="the rollout (.jsonl) to compact")
    p.add_argument(
        "--mode",
        choices=("auto", "remote", "local"),
        default="auto",
        help="auto (default: remote on the Responses wire where served, else local), remote or local",
    )
    p.set_defaults(func=_cmd_compact, configured=True)

    p = sub.add_parser(
        "batch",
        parents=[_model_options(), _config_options(mcp=True)],
        help="run a JSONL file of tasks, many sessions at once, one result record per task",
        description="Run every task of a JSONL file (one turn of a fresh session each), CONCURRENCY at a time, "
        "recording one result per task in DIR/results.jsonl and each session's rollout in DIR/rollouts/. Run it "
        "again on the same DIR to finish an interrupted batch: recorded tasks are skipped. Without model flags: "
        "the built-in batch demo model (and without TASKS, demo tasks).",
    )
    p.add_argument("tasks", nargs="?", metavar="TASKS.jsonl", help="the tasks, one JSON object per line ('-': stdin)")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (results.jsonl, rollouts/, workspaces/)"
    )
    p.add_argument("--concurrency", type=int, default=16, metavar="N", help="sessions at once (default: 16)")
    p.add_argument(
        "--rpm", type=_positive_float, metavar="R", help="at most R model requests per minute (all sessions)"
    )
    p.add_argument("--tpm", type=_positive_float, metavar="T", help="at most T tokens per minute (all sessions)")
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on a Ray cluster (default address: RAY_ADDRESS or a local cluster); needs the ray extra",
    )
    p.add_argument("--json", action="store_true", help="print progress events and the summary as JSON lines")
    p.add_argument(
        "--demo-tasks",
        type=_non_negative_int,
        default=200,
        metavar="N",
        help="without TASKS and model flags: how many made-up tasks the demo runs (default: 200)",
    )
    p.set_defaults(func=_cmd_batch, configured=True)

    p = sub.add_parser(
        "config",
        parents=[_model_options(), _approval_option(), _config_options(mcp=True)],
        help="show the settings in force and where each comes from",
        description="Show the configuration file, the profile, each model setting in force with its source "
        "(flag, profile, file, default) and the MCP servers (environment and header values masked).",
    )
    p.add_argument("--json", action="store_true", help="print it as one JSON object")
    p.set_defaults(func=_cmd_config, configured=True)

    p = sub.add_parser(
        "serve-scripted",
        help="run the scripted model server in the foreground",
        description="Serve a scripted model (Responses and Chat Completions streaming) until Ctrl-C. Prints "
        "'listening on http://HOST:PORT' once bound.",
    )
    p.add_argument("--port", type=int, default=0, help="TCP port (0: pick a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--script", metavar="FILE", help="JSON script (default: every request gets 'Done.')")
    p.add_argument(
        "--context-window", type=int, metavar="N", help="refuse inputs above N tokens (bytes/4), as services do"
    )
    p.add_argument("--no-compact", action="store_true", help="answer /v1/responses/compact with 404")
    p.set_defaults(func=_cmd_serve_scripted)

    p = sub.add_parser(
        "bench",
        help="run the benchmark harness (python -m benchmarks)",
        description="Run every benchmark scenario against the scripted server and write results.json, "
        "report.md and report.png. Every argument after 'bench' goes to the harness (bench --help).",
    )
    return parser


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _read_task(text: str | None) -> str | None:
    if text == "-":
        return sys.stdin.read().strip()
    return text


def _start(args: Any, console: Console, task: str, resume_from: Path | None) -> int:
    import trio

    from ._run import run_task

    return trio.run(functools.partial(run_task, args, console, task, resume_from))


def _cmd_exec(args: Any, console: Console) -> int:
    from ._demo import DEMO_TASK
    from ._run import CliError

    task = _read_task(args.task)
    if not task:
        if args.base_url or args.model or args.script:
            raise CliError('exec needs a task: agent-kernel exec "..."', status=2)
        task = DEMO_TASK
    return _start(args, console, task, None)


def _cmd_resume(args: Any, console: Console) -> int:
    from ._run import CliError

    path = Path(args.rollout_path).expanduser().absolute()
    if not path.is_file():
        raise CliError(f"{args.rollout_path}: no such rollout file", status=2)
    task = _read_task(args.task)
    if not task:
        raise CliError('resume needs a task: agent-kernel resume ROLLOUT "..."', status=2)
    return _start(args, console, task, path)


def _cmd_history(args: Any, console: Console) -> int:
    from ._history import print_history

    print_history(args.rollout_path, console, as_json=args.json, full=args.full)
    return 0


def _cmd_compact(args: Any, console: Console) -> int:
    import trio

    from ._compact import run_compact
    from ._run import CliError

    path = Path(args.rollout_path).expanduser().absolute()
    if not path.is_file():
        raise CliError(f"{args.rollout_path}: no such rollout file", status=2)
    return trio.run(run_compact, args, console, path)


def _cmd_batch(args: Any, console: Console) -> int:
    import trio

    from ._batch import run_batch_command

    return trio.run(run_batch_command, args, console)


def _cmd_config(args: Any, console: Console) -> int:
    import json

    from ._config import describe

    data = describe(args, args.resolved_config)
    if args.json:
        console.write(json.dumps(data) + "\n")
        return 0
    exists = "" if data["config_file_exists"] else " (not found: defaults only)"
    console.line(f"config file: {data['config_file']}{exists}")
    profile = data["profile"]
    console.line(f"profile: {profile['value']} ({profile['source']})" if profile["value"] else "profile: none")
    for key, setting in data["settings"].items():
        value = setting["value"]
        shown = (
            "(none: the built-in demo)" if value is None and key == "model" else "(none)" if value is None else value
        )
        console.line(f"{key} = {shown}  ({setting['source']})")
    servers = data["mcp_servers"]
    console.line("mcp_servers:" + ("" if servers else " none"))
    for name, server in servers.items():
        console.line(f"  {name} ({server.pop('transport')}, {server.pop('source')})")
        for key, value in server.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, list):
                value = " ".join(value) if key == "args" else ", ".join(value)
            console.line(f"    {key} = {value}")
    return 0


def _cmd_serve_scripted(args: Any, console: Console) -> int:
    from actors.scripted.__main__ import main as serve

    argv = ["--port", str(args.port), "--host", args.host]
    if args.script:
        argv += ["--script", args.script]
    if args.context_window is not None:
        argv += ["--context-window", str(args.context_window)]
    if args.no_compact:
        argv += ["--no-compact"]
    return serve(argv)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _describe_error(exc: BaseException) -> tuple[str, int]:
    from actors.history import RolloutError
    from actors.scripted import ScriptError
    from kernel import KernelError

    from ._history import HistoryFileError
    from ._run import CliError

    exc = _leaf(exc)
    if isinstance(exc, CliError):
        return str(exc), exc.status
    if isinstance(exc, (RolloutError, HistoryFileError, ScriptError, KernelError)):
        return str(exc), 1
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", 1
    if isinstance(exc, BaseExceptionGroup):
        first = _describe_error(exc.exceptions[0])[0]
        return f"{first} (and {len(exc.exceptions) - 1} more errors)", 1
    return f"unexpected {type(exc).__name__}: {exc} (AGENT_KERNEL_DEBUG=1 shows the traceback)", 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):
                pass
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["bench"]:  # everything after "bench" belongs to the harness's own parser
        from benchmarks.__main__ import main as bench

        return bench(raw[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    console = Console(sys.stdout, sys.stderr)
    try:
        if getattr(args, "configured", False):
            from ._config import resolve_config

            args.resolved_config = resolve_config(args, os.environ)
        status: int = args.func(args, console)
        return status
    except KeyboardInterrupt:
        console.error(f"{_PROG}: interrupted")
        return 130
    except BaseException as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, KeyboardInterrupt):
            console.error(f"{_PROG}: interrupted")
            return 130
        if isinstance(leaf, SystemExit):
            raise
        if os.environ.get("AGENT_KERNEL_DEBUG"):
            for line in traceback.format_exception(exc):
                console.error(line.rstrip("\n"))
        message, status = _describe_error(exc)
        console.error(f"{_PROG}: error: {message}")
        return status
