"""``agent-kernel batch``: run a JSONL file of tasks, many sessions at once, exactly one result
record per task in ``--out DIR/results.jsonl``.

Without model flags the tasks are answered by the built-in batch demo model (a scripted server
on 127.0.0.1: no key, no network); without a tasks file too, :data:`DEMO_TASK_COUNT` demo tasks
are made up. On a terminal a progress line (done / failed / running, events/s, ETA) is redrawn
below the failures as they happen; a summary table ends the run. ``--json`` prints every
progress event as a JSON line (:func:`actors.batch.batch_event_to_dict`), then
``{"type": "summary", ...}``. Bad task lines go to stderr with their line numbers and are skipped.

Ctrl-C (or SIGTERM) stops the batch: running tasks are cancelled and not recorded, every
recorded result stays; the same command finishes the rest. Exit status: 0 every task of the file
has a ``completed`` record, 1 some task failed or was aborted or some line was bad, 2 bad usage,
130 interrupted (143 on SIGTERM).

``--ray [ADDRESS]`` runs the batch on a Ray cluster (``actors.batch._ray``, the ``ray`` extra;
without ADDRESS a local cluster) with the same arguments; the ``--rpm`` / ``--tpm`` budget
becomes the Ray backend's cluster-wide limiter (``limiter_rpm`` / ``limiter_tpm``).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import trio

from actors.batch import (
    BatchEvent,
    BatchFinished,
    BatchStarted,
    BatchStats,
    BatchSummary,
    BatchTask,
    LocalRateLimiter,
    ResultsFileError,
    TaskFinished,
    TaskLineError,
    batch_event_to_dict,
    load_tasks,
    run_batch,
)
from actors.scripted import HttpError, Reasoning, Reply, Script, Text, Usage, open_scripted_server

from ._render import Console, dumps, format_duration
from ._run import CliError, ModelChoice, choose_model, model_settings

__all__ = ["BATCH_DEMO_MODEL", "BATCH_DEMO_SCRIPT", "DEMO_TASK_COUNT", "demo_tasks", "run_batch_command"]

BATCH_DEMO_MODEL = "scripted-batch-demo"
DEMO_TASK_COUNT = 200
_MAX_LINE_ERRORS = 50
_MAX_FAILURES_SHOWN = 20


def _demo_reply(text: str, *, reasoning: str | None = None, tokens: tuple[int, int] = (180, 40)) -> Reply:
    items: list[Any] = []
    if reasoning:
        items.append(Reasoning([reasoning], chunk_size=16))
    items.append(Text(text, chunk_size=8))
    return Reply(items=items, usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]), delta_delay=0.002)


BATCH_DEMO_SCRIPT = Script(
    [
        _demo_reply(
            "Done: the summary is three sentences long and keeps every number.", reasoning="Read it, then summarise."
        ),
        _demo_reply("Answer: 42. The working is in the task's rollout."),
        _demo_reply("Classified as: bug report (confidence high).", reasoning="Looks like a crash report."),
        _demo_reply("Translated. The French text keeps the original line breaks."),
        # a flaky endpoint once in a while: the request is retried (Retry-After 50 ms) and the task completes
        Reply(faults=[HttpError.server_error(503, retry_after=0.05)]),
        _demo_reply("Extracted 3 dates and 2 amounts; see the rollout for the JSON."),
        _demo_reply("The function is pure; no change needed.", reasoning="Check for side effects."),
        _demo_reply("Done: the title is now under 60 characters."),
    ],
    cycle=True,
    model=BATCH_DEMO_MODEL,
)
"""The batch demo model: short answers (some with reasoning), about 100 ms each, and one reply in
eight a 503 the session retries. Each request takes the next reply whatever task sent it, so
the answer does not depend on the task: it is a load generator, not a model."""

_DEMO_KINDS = (
    "Summarise ticket #{n} in three sentences.",
    "What is 6 x 7? Show the working (#{n}).",
    "Classify report #{n}: bug, feature request or question?",
    "Translate note #{n} to French.",
    "Extract the dates and amounts from invoice #{n}.",
)


def demo_tasks(count: int = DEMO_TASK_COUNT) -> list[BatchTask]:
    """``count`` made-up tasks (``demo-0001``…) for the demo model."""
    return [
        BatchTask(
            id=f"demo-{n:04d}", input=_DEMO_KINDS[(n - 1) % len(_DEMO_KINDS)].format(n=n), metadata={"demo": True}
        )
        for n in range(1, count + 1)
    ]


# ---------------------------------------------------------------------------------------------
# Progress rendering
# ---------------------------------------------------------------------------------------------


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@attrs.define
class _Rate:
    """Events per second over the last few seconds."""

    window: float = 3.0
    samples: deque[tuple[float, int]] = attrs.field(factory=deque)

    def add(self, now: float, count: int) -> float:
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        t0, c0 = self.samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0


class HumanProgress:
    """Progress for people: failures as lines on stderr, a redrawn progress line on a terminal,
    a summary table at the end."""

    def __init__(self, console: Console, *, bar: bool) -> None:
        self.console = console
        self.bar = bar
        self.stats: BatchStats | None = None
        self.started = time.monotonic()
        self.summary: BatchSummary | None = None
        self.failures_shown = 0
        self.failures_hidden = 0
        self._rate = _Rate()
        self._events_per_s = 0.0

    def __call__(self, event: BatchEvent) -> None:
        if isinstance(event, BatchStarted):
            self.stats = event.stats
            self.started = time.monotonic()
        elif isinstance(event, TaskFinished):
            result = event.result
            if result.status != "completed":
                if self.failures_shown < _MAX_FAILURES_SHOWN:
                    self.failures_shown += 1
                    c = self.console
                    colour = "31" if result.status == "failed" else "33"
                    c.error(c.style(f"{result.status}: {result.id}: {result.error or ''}", colour, err=True))
                else:
                    self.failures_hidden += 1
        elif isinstance(event, BatchFinished):
            self.summary = event.summary

    def line(self) -> str:
        stats = self.stats
        if stats is None:
            return ""
        c = self.console
        now = time.monotonic()
        elapsed = now - self.started
        self._events_per_s = self._rate.add(now, stats.events)
        todo = stats.total - stats.skipped
        done = stats.finished
        width = 24
        filled = int(width * done / todo) if todo else width
        full, empty = c.sym("█", "#"), c.sym("░", ".")
        bar = full * filled + empty * (width - filled)
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (todo - done) / rate if rate > 0 else float("inf")
        parts = [
            f"{bar} {done}/{todo}",
            c.style(f"done {stats.completed}", "32"),
            c.style(f"failed {stats.failed + stats.aborted}", "31") if stats.failed + stats.aborted else "failed 0",
            f"running {stats.running}",
            f"{self._events_per_s:,.0f} events/s",
            f"{rate:.1f} tasks/s",
            f"ETA {_fmt_eta(eta)}",
        ]
        return "  ".join(parts)

    async def run_bar(self) -> None:
        """Redraw the progress line (terminal only) until cancelled."""
        if not self.bar:
            return
        while True:
            await trio.sleep(0.1)
            text = self.line()
            if text:
                self.console.show_spinner(text)

    def finish(self) -> None:
        self.console.clear_spinner()


class JsonProgress:
    """``--json``: each progress event as one JSON line on stdout."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.summary: BatchSummary | None = None

    def __call__(self, event: BatchEvent) -> None:
        if isinstance(event, BatchFinished):
            self.summary = event.summary
            return  # the summary line comes last, with the exit status
        self.console.write(dumps(batch_event_to_dict(event)) + "\n")

    async def run_bar(self) -> None:
        return

    def finish(self) -> None:
        pass


def _summary_table(console: Console, summary: BatchSummary, *, line_errors: int) -> None:
    c = console
    rows = [
        ("completed", summary.completed, "32"),
        ("failed", summary.failed, "31"),
        ("aborted", summary.aborted, "33"),
    ]
    c.blank_line()
    c.line(c.style("status        tasks", "1"))
    for name, count, colour in rows:
        text = f"{name:<12}{count:>7,}"
        c.line(c.style(text, colour) if count else text)
    if summary.skipped:
        c.line(f"{'skipped':<12}{summary.skipped:>7,}" + c.style("  (already recorded by an earlier run)", "2"))
    if summary.unfinished:
        c.line(
            c.style(f"{'unfinished':<12}{summary.unfinished:>7,}", "33")
            + c.style("  (run the same command again to finish)", "2")
        )
    if line_errors:
        c.line(c.style(f"{'bad lines':<12}{line_errors:>7,}", "31") + c.style("  (skipped; see stderr)", "2"))
    c.line(c.style("─" * 19 if c.unicode else "-" * 19, "2"))
    usage = summary.usage
    facts = [
        format_duration(summary.wall_time),
        f"{summary.tasks_per_s:,.1f} tasks/s",
        f"{summary.events_per_s:,.0f} events/s",
        f"{summary.retries:,} retr{'y' if summary.retries == 1 else 'ies'}",
        f"{summary.tool_calls:,} tool call{'' if summary.tool_calls == 1 else 's'}",
        f"{usage.get('total_tokens', 0):,} tokens",
        f"CPU {summary.cpu_per_task * 1e3:,.1f} ms/task",
    ]
    c.line(c.style(" · ".join(facts), "2"))
    if summary.out_dir:
        c.line(c.style(f"results: {os.path.join(summary.out_dir, 'results.jsonl')}", "2"))


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def _report_line_errors(console: Console, source: str, errors: list[TaskLineError]) -> None:
    for error in errors[:_MAX_LINE_ERRORS]:
        console.error(f"{source}: line {error.line}: {error.message} (skipped)")
    if len(errors) > _MAX_LINE_ERRORS:
        console.error(f"{source}: … and {len(errors) - _MAX_LINE_ERRORS} more bad lines (skipped)")


def _load(args: Any, choice: ModelChoice, console: Console) -> tuple[list[BatchTask], list[TaskLineError]]:
    if args.tasks is None:
        if choice.kind != "demo":
            raise CliError("batch needs a tasks file: agent-kernel batch TASKS.jsonl --out DIR", status=2)
        return demo_tasks(args.demo_tasks), []
    if args.tasks == "-":
        from actors.batch import parse_tasks

        tasks, errors = parse_tasks(sys.stdin.read())
        source = "<stdin>"
    else:
        path = Path(args.tasks).expanduser()
        if not path.is_file():
            raise CliError(f"{args.tasks}: no such tasks file", status=2)
        try:
            tasks, errors = load_tasks(path)
        except OSError as exc:
            raise CliError(f"cannot read {args.tasks}: {exc.strerror or exc}") from None
        source = args.tasks
    _report_line_errors(console, source, errors)
    return tasks, errors


def _limiter(args: Any) -> LocalRateLimiter | None:
    if args.rpm is None and args.tpm is None:
        return None
    return LocalRateLimiter(rpm=args.rpm, tpm=args.tpm)


def _ray_runner() -> Callable[..., Any]:
    if importlib.util.find_spec("ray") is None:
        raise CliError("--ray needs Ray, which is not installed: pip install 'trio-agent-kernel[ray]'")
    try:
        from actors.batch._ray import run_batch_ray
    except ImportError as exc:
        raise CliError(f"the Ray backend cannot be loaded ({exc}): pip install 'trio-agent-kernel[ray]'") from None
    runner: Callable[..., Any] = run_batch_ray
    return runner


async def _call_ray(runner: Callable[..., Any], tasks: list[BatchTask], progress: Any, **kwargs: Any) -> Any:
    # the Ray backend takes the budget as numbers (it builds one cluster-wide limiter actor)
    limiter = kwargs.pop("limiter", None)
    parameters = inspect.signature(runner).parameters
    if "limiter_rpm" in parameters:
        if limiter is not None:
            kwargs.update(limiter_rpm=limiter.rpm, limiter_tpm=limiter.tpm)
            if "limiter_window" in parameters:
                kwargs["limiter_window"] = limiter.window
    elif limiter is not None:
        kwargs["limiter"] = limiter
    if inspect.iscoroutinefunction(runner):
        return await runner(tasks, progress=progress, **kwargs)

    # a blocking driver: run it in a thread, deliver its progress events in the Trio thread
    def in_thread() -> Any:
        def forward(event: Any) -> None:
            trio.from_thread.run_sync(progress, event)

        return runner(tasks, progress=forward, **kwargs)

    return await trio.to_thread.run_sync(in_thread, abandon_on_cancel=True)


async def run_batch_command(args: Any, console: Console) -> int:
    """The ``batch`` command; returns the exit status."""
    choice = choose_model(args, os.environ)
    console.add_secret(choice.api_key)
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1", status=2)
    tasks, line_errors = _load(args, choice, console)
    from ._config import mcp_servers

    specs = getattr(args, "mcp_specs", None) or []
    servers = mcp_servers(specs)
    for spec in specs:
        for secret in spec.secrets():
            console.add_secret(secret)
    out_dir = Path(args.out).expanduser().absolute()
    runner = _ray_runner() if args.ray is not None else None
    limiter = _limiter(args)
    progress: HumanProgress | JsonProgress = (
        JsonProgress(console) if args.json else HumanProgress(console, bar=console.stdout_tty)
    )
    if not args.json:
        label = choice.label if choice.kind != "demo" else f"{BATCH_DEMO_MODEL} (built-in batch demo, offline)"
        fields = [
            f"tasks: {len(tasks):,}",
            f"out: {out_dir}",
            f"concurrency: {args.concurrency}",
            f"model: {label}",
        ]
        if limiter is not None:
            budget = [f"{v:g} {k}" for k, v in (("rpm", args.rpm), ("tpm", args.tpm)) if v is not None]
            fields.append("budget: " + ", ".join(budget))
        if runner is not None:
            fields.append(f"ray: {args.ray or 'a local cluster'}")
        if servers:
            fields.append("mcp: " + ", ".join(s.name + ("" if s.shared else " (per task)") for s in servers))
        console.line(console.style("agent-kernel batch", "1") + console.style("  " + "  ".join(fields), "2"))
        if any(t.tools for t in tasks):
            console.line(
                console.style("tools run without approval prompts, each task in its own workspace (or its cwd)", "2")
            )

    signalled: list[int] = []
    stopped = trio.CancelScope()

    async def watch(signals: Any) -> None:
        async for signum in signals:
            if not signalled:
                console.error(
                    console.style(
                        "stopping: running tasks are cancelled (not recorded); run again to finish", "33", err=True
                    )
                )
            signalled.append(signum)
            stopped.cancel()

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, signals)
            nursery.start_soon(progress.run_bar)
            try:
                with stopped:
                    async with AsyncExitStack() as stack:
                        base_url = choice.base_url
                        script = choice.script
                        if choice.kind == "demo":
                            script = BATCH_DEMO_SCRIPT
                        if script is not None:
                            server = await stack.enter_async_context(
                                open_scripted_server(script, record_requests=False)
                            )
                            base_url = server.base_url
                        assert base_url is not None
                        settings = model_settings(
                            args,
                            choice,
                            base_url,
                            model=choice.model if choice.kind != "demo" else BATCH_DEMO_MODEL,
                            stream_max_retries=args.max_retries,
                        )
                        kwargs: dict[str, Any] = dict(
                            out_dir=out_dir,
                            concurrency=args.concurrency,
                            model=settings,
                            limiter=limiter,
                            max_retries=args.max_retries,
                        )
                        if servers:
                            kwargs["mcp_servers"] = servers
                        if runner is not None:
                            await _call_ray(runner, tasks, progress, address=args.ray or None, **kwargs)
                        else:
                            await run_batch(tasks, progress=progress, **kwargs)
            except ResultsFileError as exc:
                raise CliError(str(exc)) from None
            finally:
                progress.finish()
                nursery.cancel_scope.cancel()

    summary = progress.summary
    if summary is None:  # stopped before the batch started
        code = 143 if signalled and signalled[0] == signal.SIGTERM else 130
        if args.json:
            console.write(dumps({"type": "summary", "exit_code": code, "interrupted": True}) + "\n")
        return code
    if signalled:
        code = 143 if signalled[0] == signal.SIGTERM else 130
    elif summary.failed or summary.aborted or summary.unfinished or line_errors:
        code = 1
    else:
        code = 0
    if args.json:
        console.write(
            dumps({"type": "summary", **summary.to_json(), "bad_lines": len(line_errors), "exit_code": code}) + "\n"
        )
    else:
        if isinstance(progress, HumanProgress) and progress.failures_hidden:
            console.error(f"… and {progress.failures_hidden} more unfinished tasks (see results.jsonl)")
        _summary_table(console, summary, line_errors=len(line_errors))
    return code
