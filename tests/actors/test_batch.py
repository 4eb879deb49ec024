"""Batch runs (``actors.batch`` and ``agent-kernel batch``) against the scripted server over
loopback: exactly one record per task at scale, faults confined to their task, SIGKILL and
resume, request budgets, bad task lines, the CLI end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.batch import (
    BatchFinished,
    BatchStarted,
    BatchTask,
    LocalRateLimiter,
    RateLimitedModel,
    ResultsFile,
    ResultsFileError,
    ResultsFileLocked,
    TaskFinished,
    TaskLineError,
    TaskResult,
    TaskStarted,
    load_tasks,
    read_results,
    run_batch,
    run_task,
    safe_id,
)
from actors.model import ModelSettings, open_model_actor
from actors.scripted import (
    Disconnect,
    FunctionCall as ScriptCall,
    HttpError,
    Reply,
    Script,
    Text,
    Usage,
    open_scripted_server,
)
from actors.tools import ToolRegistry
from kernel import FatalToolError, Message, ModelClient, ModelEvent, Prompt
from kernel.testing import ScriptedModel, text_response

CLI = [sys.executable, "-m", "actors.cli"]
QUICK = Script([], default=Reply(items=[Text("ok")], usage=Usage(input_tokens=3, output_tokens=1)))


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), TMPDIR=str(tmp_path), NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _write_tasks(path: Path, tasks: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return path


def _one_per_id(out: Path, ids: set[str]) -> list[TaskResult]:
    """Every line of results.jsonl is a complete record, and there is exactly one per task."""
    text = (out / "results.jsonl").read_text()
    assert text.endswith("\n")
    records = [TaskResult.from_json(json.loads(line)) for line in text.splitlines()]
    got = [r.id for r in records]
    assert len(got) == len(set(got)), "a task has two records"
    assert set(got) == ids
    return records


# ---------------------------------------------------------------------------------------------
# Task files
# ---------------------------------------------------------------------------------------------


def test_load_tasks_reports_bad_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    lines = [
        json.dumps({"id": "a", "input": "first"}),  # 1
        "{not json",  # 2
        json.dumps({"id": "a", "input": "again"}),  # 3: duplicate id (the later line is the bad one)
        json.dumps({"id": "b"}),  # 4: no input
        "",  # 5: blank lines are skipped silently
        json.dumps({"id": "c", "input": "x", "tools": ["shell", "rm"]}),  # 6: unknown tool
        json.dumps({"id": "d", "input": "x", "extra": 1}),  # 7: unknown key
        json.dumps([1, 2]),  # 8: not an object
        json.dumps(
            {"id": 7, "input": [item], "tools": ["shell"], "model": "m2", "cwd": ".", "metadata": {"k": 1}}
        ),  # 9
        json.dumps({"id": "e", "input": [{"type": "message", "role": 5}]}),  # 10: malformed wire item
        json.dumps({"id": "", "input": "x"}),  # 11: empty id
    ]
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "z", "input": "\xff"}\n')  # 12: not UTF-8
    tasks, errors = load_tasks(path)
    assert [t.id for t in tasks] == ["a", "7"]
    assert tasks[0].input == "first" and tasks[0].input_items() == [Message.user("first")]
    seven = tasks[1]
    assert seven.tools == ("shell",) and seven.model == "m2" and seven.cwd == "." and seven.metadata == {"k": 1}
    assert len(seven.input_items()) == 1
    assert BatchTask.from_json(seven.to_json()) == seven
    assert [e.line for e in errors] == [2, 3, 4, 6, 7, 8, 10, 11, 12]
    by_line = {e.line: str(e) for e in errors}
    assert "not JSON" in by_line[2]
    assert "duplicate id 'a' (first on line 1)" in by_line[3]
    assert "missing 'input'" in by_line[4]
    assert "'rm'" in by_line[6] and "shell, apply_patch" in by_line[6]
    assert "'extra'" in by_line[7] and "metadata" in by_line[7]
    assert by_line[12].startswith("line 12: not UTF-8")
    assert all(isinstance(e, TaskLineError) for e in errors)


def test_safe_ids_are_distinct_file_names() -> None:
    ids = ["task-1", "Task-1", "a/b", "a_b", "..", "x" * 300, "x" * 301, "é", "a b", "a.", "con"]
    names = [safe_id(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert len({n.lower() for n in names}) == len(ids)  # case-insensitive file systems too
    assert safe_id("task-1") == "task-1"
    for name in names:
        assert "/" not in name and name not in (".", "..") and len(name) <= 100


# ---------------------------------------------------------------------------------------------
# The results file
# ---------------------------------------------------------------------------------------------


def test_results_file_is_durable_locked_and_cuts_a_torn_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ResultsFile(out) as results:
        results.append(TaskResult(id="a", status="completed", final_message="ok", usage={"total_tokens": 3}))
        results.append_many(
            [TaskResult(id="b", status="failed", error="StreamError: x"), TaskResult(id="c", status="aborted")]
        )
        with pytest.raises(ResultsFileError, match="already has a record"):
            results.append(TaskResult(id="a", status="completed"))
        with pytest.raises(ResultsFileLocked):
            ResultsFile(out)  # one driver per directory
    path = out / "results.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"id": "d", "status": "compl')  # killed mid-write
    assert [r.id for r in read_results(out)] == ["a", "b", "c"]
    with ResultsFile(out) as results:
        assert results.truncated > 0
        assert results.completed_ids() == {"a", "b", "c"}
        results.append(TaskResult(id="d", status="completed"))
    assert path.read_bytes() == whole + TaskResult(id="d", status="completed").line()
    records = read_results(out)
    assert records[0] == TaskResult.from_json(records[0].to_json())
    assert records[0].usage == {"total_tokens": 3} and records[1].error == "StreamError: x"
    # a corrupt line that is not the last is not a crash artefact: refuse it
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"garbage"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ResultsFileError, match="line 2"):
        ResultsFile(out)


# ---------------------------------------------------------------------------------------------
# At scale
# ---------------------------------------------------------------------------------------------


async def test_500_tasks_at_concurrency_100_give_exactly_500_records(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tasks = [BatchTask(id=f"t{i:03d}", input=f"task {i}") for i in range(500)]
    peak = 0
    events: list[str] = []

    def progress(event: Any) -> None:
        nonlocal peak
        events.append(type(event).__name__)
        if isinstance(event, TaskStarted):
            peak = max(peak, event.stats.running)

    async with open_scripted_server(QUICK, record_requests=False) as server:
        settings = ModelSettings(base_url=server.base_url, model="scripted-model")
        summary = await run_batch(tasks, out_dir=out, concurrency=100, model=settings, progress=progress)
        assert server.replies_served == 500
    assert (summary.total, summary.completed, summary.failed, summary.aborted, summary.skipped) == (500, 500, 0, 0, 0)
    assert not summary.interrupted and summary.tasks_per_s > 0 and summary.events > 500
    assert summary.usage["total_tokens"] == 500 * 4
    assert 1 < peak <= 100
    assert events[0] == "BatchStarted" and events[-1] == "BatchFinished"
    assert events.count("TaskStarted") == events.count("TaskFinished") == 500
    records = _one_per_id(out, {t.id for t in tasks})
    for r in records:
        assert r.status == "completed" and r.final_message == "ok" and r.attempt == 1 and r.error is None
        assert r.rollout == f"rollouts/{r.id}.jsonl" and (out / r.rollout).is_file()
        assert r.events > 0 and r.wall_time > 0 and r.cpu_time >= 0
    assert sum(r.cpu_time for r in records) <= summary.cpu_time * 1.05
    # run again: everything is recorded, nothing runs
    again = await run_batch(tasks, out_dir=out, concurrency=100, model=ScriptedModel([]))
    assert (again.skipped, again.completed) == (500, 0)
    assert len((out / "results.jsonl").read_text().splitlines()) == 500


# ---------------------------------------------------------------------------------------------
# Faults stay in their task
# ---------------------------------------------------------------------------------------------


class _Router:
    """A ModelClient sending each task's requests to the client its input text starts with."""

    def __init__(self, routes: dict[str, ModelClient]) -> None:
        self.routes = routes

    def stream(self, prompt: Prompt) -> Any:
        first = prompt.input[0]
        assert isinstance(first, Message)
        text = first.text()
        for prefix, client in self.routes.items():
            if text.startswith(prefix):
                return client.stream(prompt)
        raise AssertionError(f"no route for {text!r}")


async def test_faults_retries_recover_and_a_fatal_tool_error_fails_only_its_task(tmp_path: Path) -> None:
    scripts = {
        "plain": QUICK,
        # each flaky task: a 503, then a dropped stream, then the answer -> exactly 2 retries
        **{
            f"flaky-{i}": Script(
                [
                    Reply(faults=[HttpError.server_error(503, retry_after=0.01)]),
                    Reply(items=[Text("partial answer", chunk_size=2)], faults=[Disconnect(after_events=3)]),
                    Reply(items=[Text("recovered")]),
                ]
            )
            for i in range(4)
        },
        # the model calls a tool that raises FatalToolError
        "fatal": Script([Reply(items=[ScriptCall("call_1", "explode", {"why": "test"})])]),
        # the endpoint never recovers: the retry budget runs out
        "doomed": Script([Reply(faults=[HttpError.server_error(500, retry_after=0.01)])], cycle=True),
    }
    tasks = [BatchTask(id=f"plain-{i}", input=f"plain {i}") for i in range(20)]
    tasks += [BatchTask(id=f"flaky-{i}", input=f"flaky-{i}: go") for i in range(4)]
    tasks += [BatchTask(id="fatal", input="fatal: go"), BatchTask(id="doomed", input="doomed: go")]

    exploded = ToolRegistry()

    @exploded.tool
    async def explode(why: str) -> str:
        """Always fails fatally.

        Args:
            why: Why.
        """
        raise FatalToolError(f"explode called ({why})")

    def tools_factory(task: BatchTask, workspace: Path | None) -> ToolRegistry | None:
        return exploded if task.id == "fatal" else None

    async with trio.open_nursery() as nursery:
        routes: dict[str, ModelClient] = {}
        servers = {}
        for prefix, script in scripts.items():
            server = await nursery_start_server(nursery, script)
            servers[prefix] = server
            actor = await nursery_start_actor(nursery, server.base_url)
            routes[prefix] = actor.client()
        summary = await run_batch(
            tasks, out_dir=tmp_path, concurrency=8, model=_Router(routes), max_retries=3, tools_factory=tools_factory
        )
        nursery.cancel_scope.cancel()
    records = {r.id: r for r in _one_per_id(tmp_path, {t.id for t in tasks})}
    assert (summary.completed, summary.failed, summary.aborted) == (24, 2, 0)
    for i in range(20):
        r = records[f"plain-{i}"]
        assert (r.status, r.retries, r.tool_calls, r.final_message) == ("completed", 0, 0, "ok")
    for i in range(4):
        r = records[f"flaky-{i}"]
        assert (r.status, r.retries, r.final_message) == ("completed", 2, "recovered")
    fatal = records["fatal"]
    assert fatal.status == "failed" and fatal.tool_calls == 1
    assert fatal.error is not None and "FatalError" in fatal.error and "explode called (test)" in fatal.error
    doomed = records["doomed"]
    assert doomed.status == "failed" and doomed.retries == 3 and doomed.error is not None
    assert len(servers["doomed"].requests) == 4  # the first attempt and 3 retries
    assert summary.retries == 4 * 2 + 3
    assert (tmp_path / "workspaces" / "fatal").is_dir()  # tools get a fresh workspace


async def nursery_start_server(nursery: trio.Nursery, script: Script) -> Any:
    async def serve(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_scripted_server(script) as server:
            task_status.started(server)
            await trio.sleep_forever()

    return await nursery.start(serve)


async def nursery_start_actor(nursery: trio.Nursery, base_url: str) -> Any:
    async def run(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_model_actor(ModelSettings(base_url=base_url, model="scripted-model")) as actor:
            task_status.started(actor)
            await trio.sleep_forever()

    return await nursery.start(run)


# ---------------------------------------------------------------------------------------------
# One task: stale rollouts, workspaces, models
# ---------------------------------------------------------------------------------------------


async def test_run_task_restarts_a_killed_attempt_and_reports_setup_failures(tmp_path: Path) -> None:
    script = Script(
        [
            Reply(items=[ScriptCall("call_1", "shell", {"command": ["bash", "-c", "echo hi > made.txt"]})]),
            Reply(items=[Text("made it")]),
        ]
    )
    stale = tmp_path / "rollouts" / "with-tools.jsonl"
    stale.parent.mkdir()
    stale.write_text('{"type":"session_meta"}\n{"type":"item","se')  # an attempt killed mid-task
    (tmp_path / "workspaces" / "with-tools").mkdir(parents=True)
    (tmp_path / "workspaces" / "with-tools" / "junk").write_text("left by the killed attempt")
    async with open_scripted_server(script) as server:
        async with open_model_actor(ModelSettings(base_url=server.base_url, model="m1")) as actor:
            task = BatchTask(id="with-tools", input="make a file", tools=["shell"])
            result = await run_task(task, out_dir=tmp_path, model=actor)
            assert (result.status, result.final_message, result.tool_calls, result.attempt) == (
                "completed",
                "made it",
                1,
                2,
            )
            workspace = tmp_path / "workspaces" / "with-tools"
            assert (workspace / "made.txt").read_text() == "hi\n" and not (workspace / "junk").exists()
            assert (tmp_path / "workspaces" / "with-tools.stale-1" / "junk").exists()
            assert stale.with_name("with-tools.jsonl.stale-1").read_text().startswith('{"type":"session_meta"}')
            header = json.loads(stale.read_text().splitlines()[0])
            assert header["type"] == "session_meta" and header["model"] == "m1" and header["cwd"] == str(workspace)

            # a task naming another model gets it (a ModelActor of its own for the task)
            other = await run_task(BatchTask(id="other-model", input="hi", model="m2"), out_dir=tmp_path, model=actor)
            assert other.status == "completed"
            assert [r.body["model"] for r in server.requests] == ["m1", "m1", "m2"]

            missing = await run_task(
                BatchTask(id="bad-cwd", input="hi", cwd=str(tmp_path / "nope")), out_dir=tmp_path, model=actor
            )
            assert missing.status == "failed" and missing.error is not None and "not a directory" in missing.error

    plain = ScriptedModel([text_response("fine")])
    switch = await run_task(BatchTask(id="switch", input="hi", model="m9"), out_dir=tmp_path, model=plain)
    assert switch.status == "failed" and switch.error is not None and "cannot switch models" in switch.error
    assert not plain.prompts


# ---------------------------------------------------------------------------------------------
# Cancellation and SIGKILL: nothing recorded is lost, nothing runs twice
# ---------------------------------------------------------------------------------------------


async def test_a_cancelled_batch_records_only_finished_tasks_and_resumes(tmp_path: Path) -> None:
    slow = Script([], default=Reply(items=[Text("slow answer", chunk_size=2)], delta_delay=0.005))
    tasks = [BatchTask(id=f"c{i}", input=f"c {i}") for i in range(60)]
    finished: list[str] = []
    final: list[Any] = []
    async with open_scripted_server(slow, record_requests=False) as server:
        settings = ModelSettings(base_url=server.base_url, model="m")
        with trio.CancelScope() as scope:

            def progress(event: Any) -> None:
                if isinstance(event, TaskFinished):
                    finished.append(event.result.id)
                    if len(finished) == 15:
                        scope.cancel()
                elif isinstance(event, BatchFinished):
                    final.append(event.summary)

            await run_batch(tasks, out_dir=tmp_path, concurrency=10, model=settings, progress=progress)
        assert scope.cancelled_caught
        assert final and final[0].interrupted and final[0].finished == len(finished)
        recorded = [r.id for r in read_results(tmp_path)]
        assert sorted(recorded) == sorted(finished)  # exactly what was acknowledged
        summary = await run_batch(tasks, out_dir=tmp_path, concurrency=10, model=settings)
    assert summary.skipped == len(finished) and summary.completed == 60 - len(finished)
    records = _one_per_id(tmp_path, {t.id for t in tasks})
    assert any(r.attempt == 2 for r in records)  # tasks cut off by the cancel started over


@asynccontextmanager
async def _spawned(args: list[str], env: dict[str, str]) -> AsyncIterator[trio.Process]:
    process = await trio.lowlevel.open_process(
        [*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def _kill_after(args: list[str], env: dict[str, str], records: int) -> list[str]:
    """Run the CLI with --json; SIGKILL it once ``records`` more tasks were acknowledged. Returns the
    ids it acknowledged (task_finished lines)."""
    acknowledged: list[str] = []
    async with _spawned(args, env) as process:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(60):
            while len(acknowledged) < records:
                chunk = await process.stdout.receive_some()
                assert chunk, "the batch ended before it could be killed"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    if event["type"] == "task_finished":
                        acknowledged.append(event["result"]["id"])
        process.send_signal(signal.SIGKILL)
        await process.wait()
        assert process.returncode == -signal.SIGKILL
    return acknowledged


async def test_sigkill_mid_run_then_resume_gives_exactly_one_record_per_task(tmp_path: Path) -> None:
    slow = Script([], default=Reply(items=[Text("an answer in pieces", chunk_size=3)], delta_delay=0.01), cycle=False)
    ids = {f"k{i:03d}" for i in range(120)}
    tasks_file = _write_tasks(tmp_path / "tasks.jsonl", [{"id": i, "input": f"do {i}"} for i in sorted(ids)])
    out = tmp_path / "out"
    env = _env(tmp_path)
    async with open_scripted_server(slow, record_requests=False) as server:
        args = [
            "batch",
            str(tasks_file),
            "--out",
            str(out),
            "--concurrency",
            "12",
            "--base-url",
            server.base_url,
            "--model",
            "m",
            "--json",
        ]
        first = await _kill_after(args, env, 20)
        after_first = [r.id for r in read_results(out)]
        assert set(first) <= set(after_first)  # every acknowledged record survived SIGKILL
        # a kill can also land in the middle of a record: the resumed run cuts the torn line off
        with open(out / "results.jsonl", "ab") as f:
            f.write(b'{"id": "k119", "status": "comp')
        second = await _kill_after(args, env, 20)
        assert not set(second) & set(after_first)  # nothing recorded ran again
        assert set(first) | set(second) <= {r.id for r in read_results(out)}
        done = await trio.run_process([*CLI, *args], env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["skipped"] + summary["completed"] == 120 and summary["failed"] == 0
    records = _one_per_id(out, ids)
    assert all(r.status == "completed" for r in records)
    restarted = [r for r in records if r.attempt > 1]
    assert restarted  # tasks that were running at a kill started over with a fresh rollout
    for r in restarted:
        assert (out / "rollouts" / f"{r.id}.jsonl.stale-1").exists()
        assert json.loads((out / r.rollout).read_text().splitlines()[0])["type"] == "session_meta"  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# Request budgets
# ---------------------------------------------------------------------------------------------


class _Stamped:
    """A ModelClient recording the Trio time each request is sent."""

    def __init__(self, inner: ModelClient) -> None:
        self.inner = inner
        self.times: list[float] = []

    def stream(self, prompt: Prompt) -> Any:
        self.times.append(trio.current_time())
        return self.inner.stream(prompt)


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    for i, t in enumerate(times):
        j = i
        while j < len(times) and times[j] < t + window - 1e-9:
            j += 1
        best = max(best, j - i)
    return best


async def test_rpm_holds_across_sessions_under_a_mock_clock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    class Model:  # a fresh in-memory model per request: every task gets "done"
        def stream(self, prompt: Prompt) -> Any:
            return ScriptedModel([text_response("done")]).stream(prompt)

    stamped = _Stamped(Model())
    limiter = LocalRateLimiter(rpm=10)
    tasks = [BatchTask(id=f"r{i}", input="x") for i in range(35)]
    start = trio.current_time()
    summary = await run_batch(tasks, out_dir=tmp_path, concurrency=35, model=stamped, limiter=limiter)
    assert summary.completed == 35
    offsets = sorted(t - start for t in stamped.times)
    assert _max_in_window(offsets, 60.0) == 10
    # 10 at once, 10 a minute later, ...: the last five wait three minutes
    assert [round(t) for t in offsets[::10]] == [0, 60, 120, 180]
    # `waited` counts requests admitted later than they asked: at most the 25 beyond the first
    # minute's 10 (a task whose rollout opened in a worker thread while the clock jumped asks later
    # and may be admitted at once, so the exact count depends on thread timing)
    assert limiter.admitted == 35 and 0 < limiter.waited <= 25


async def test_limiter_is_fifo_and_counts_tokens(autojump_clock: trio.testing.MockClock) -> None:
    limiter = LocalRateLimiter(tpm=1000)
    order: list[tuple[int, float]] = []

    async def request(n: int, estimate: int, used: int) -> None:
        await trio.sleep(n * 0.001)  # arrive in order
        await limiter.acquire(estimate)
        order.append((n, trio.current_time()))
        await trio.sleep(1)
        limiter.record(used)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, 0, 600, 600)
        nursery.start_soon(request, 1, 600, 600)  # must wait a window: 600 + 600 > 1000
        nursery.start_soon(request, 2, 10, 10)  # small, but it arrived later: it waits its turn (FIFO)
    assert [n for n, _ in order] == [0, 1, 2]
    times = [t - start for _, t in order]
    assert times[0] < 1 and 60 <= times[1] < 61 and 60 <= times[2] < 61
    assert limiter.tokens_in_window == 610

    # an estimate that was too high is corrected by record(): the next request need not wait
    limiter = LocalRateLimiter(tpm=1000)
    await limiter.acquire(900)
    limiter.record(100)
    before = trio.current_time()
    await limiter.acquire(800)
    assert trio.current_time() == before

    with pytest.raises(ValueError):
        LocalRateLimiter(rpm=0)


async def test_rpm_holds_over_real_http(tmp_path: Path) -> None:
    limiter = LocalRateLimiter(rpm=4, window=0.5)  # 4 requests per half second
    async with open_scripted_server(QUICK) as server:
        async with open_model_actor(ModelSettings(base_url=server.base_url, model="m")) as actor:
            stamped = _Stamped(actor.client())
            tasks = [BatchTask(id=f"h{i}", input="x") for i in range(10)]
            summary = await run_batch(tasks, out_dir=tmp_path, concurrency=10, model=stamped, limiter=limiter)
        assert summary.completed == 10 and len(server.requests) == 10
    assert _max_in_window(stamped.times, 0.5) <= 4
    assert max(stamped.times) - min(stamped.times) >= 1.0  # the third group waited two windows


async def test_rate_limited_model_records_usage_and_failures() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.acquired: list[int] = []
            self.recorded: list[int] = []

        async def acquire(self, estimated_tokens: int = 0) -> None:
            self.acquired.append(estimated_tokens)

        def record(self, tokens_used: int) -> None:
            self.recorded.append(tokens_used)

    limiter = Recorder()
    from kernel import Completed, TokenUsage

    response = text_response("hi")
    response.batches[-1][-1] = Completed("resp", TokenUsage(10, 0, 5, 0, 15))
    from kernel.testing import Fault

    model = RateLimitedModel(ScriptedModel([response, text_response("x")]), limiter)
    prompt = Prompt(input=[Message.user("hello")])
    for _ in range(2):
        async with model.stream(prompt) as batches:
            async for _batch in batches:
                pass
    assert limiter.acquired[0] > 0 and limiter.acquired[1] == 15  # estimate: the last response's size
    assert limiter.recorded == [15, 0]  # no usage reported: 0
    failing = RateLimitedModel(ScriptedModel([]), limiter)
    failing.client.responses = [type(response)(batches=[], fault=Fault("stream_error", after_events=0))]  # type: ignore[attr-defined]
    with pytest.raises(Exception):
        async with failing.stream(prompt) as batches:
            async for _batch in batches:
                pass
    assert limiter.recorded[-1] == 0 and len(limiter.recorded) == len(limiter.acquired)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def test_cli_batch_runs_the_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = subprocess.run(
        [*CLI, "batch", "--out", str(out), "--concurrency", "10", "--demo-tasks", "30"],
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "completed" in run.stdout and "results:" in run.stdout and "tasks/s" in run.stdout
    records = _one_per_id(out, {f"demo-{n:04d}" for n in range(1, 31)})
    assert all(r.status == "completed" and r.final_message for r in records)
    assert sum(r.retries for r in records) >= 1  # the demo model's 503s were retried

    again = subprocess.run(
        [*CLI, "batch", "--out", str(out), "--demo-tasks", "30", "--json"],
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    lines = [json.loads(line) for line in again.stdout.splitlines()]
    assert lines[0]["type"] == "batch_started" and lines[-1]["type"] == "summary"
    assert lines[-1]["skipped"] == 30 and lines[-1]["completed"] == 0


def test_cli_batch_reports_bad_lines_and_runs_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from actors.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "\n".join(
            [
                json.dumps({"id": "one", "input": "first"}),
                "{oops",
                json.dumps({"id": "one", "input": "dup"}),
                json.dumps({"id": "two", "input": "second"}),
            ]
        )
        + "\n"
    )
    out = tmp_path / "out"
    assert main(["batch", str(tasks), "--out", str(out), "--json"]) == 1  # 1: some lines were bad
    captured = capsys.readouterr()
    assert "line 2: not JSON" in captured.err and "line 3: duplicate id 'one' (first on line 1)" in captured.err
    assert "Traceback" not in captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]  # stdout: JSON lines only
    assert lines[-1]["type"] == "summary" and lines[-1]["completed"] == 2 and lines[-1]["bad_lines"] == 2
    _one_per_id(out, {"one", "two"})


def test_cli_batch_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from actors.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["batch", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.jsonl: no such tasks file" in capsys.readouterr().err
    assert main(["batch", "--out", str(tmp_path / "o"), "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]) == 2
    assert "needs a tasks file" in capsys.readouterr().err
    assert main(["batch", "--concurrency", "3"]) == 2  # --out is required
    assert main(["batch", "--out", str(tmp_path / "o"), "--concurrency", "0"]) == 2
    assert "--concurrency must be at least 1" in capsys.readouterr().err


def test_ray_flag_without_ray_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from actors.cli import _batch
    from actors.cli._run import CliError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(CliError, match=r"pip install 'trio-agent-kernel\[ray\]'"):
        _batch._ray_runner()


async def test_progress_accepts_an_event_sink(tmp_path: Path) -> None:
    class Sink:
        def __init__(self) -> None:
            self.events: list[Any] = []

        async def publish(self, events: Sequence[Any]) -> None:
            self.events.extend(events)

    sink = Sink()
    await run_batch([BatchTask(id="s", input="x")], out_dir=tmp_path, model=ScriptedModel([]), progress=sink)
    assert [type(e) for e in sink.events] == [BatchStarted, TaskStarted, TaskFinished, BatchFinished]
    with pytest.raises(ValueError, match="duplicate"):
        await run_batch([BatchTask(id="s", input="x")] * 2, out_dir=tmp_path, model=ScriptedModel([]))


_ = (ModelEvent,)
