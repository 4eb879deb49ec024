"""The benchmark harness: the scripted server process, the system workers, the scenarios.

Measurement rules (the issue's):

* The scripted model server runs in a process of its own (``python -m actors.scripted``), so a
  client's CPU time is its own: every CPU figure is ``time.process_time()`` inside the measured
  process, never wall clock.
* Each system runs in a subprocess of its own (``python -m benchmarks.systems.<name> --serve``),
  against the same server binary and the same script. For a scenario the harness starts one worker
  per system, lets each do one warm-up run (imports, lazy caches, connection set-up), then runs
  the measured runs **round-robin** (kernel, floor, peers, kernel, floor, peers, …), so slow drift
  in the machine's load lands on every system alike.
* Every figure is the median of ``runs`` runs (5; 3 with ``--quick``) with min and max; ratios are
  medians divided within the one invocation, and each round's paired ratio gives their spread.
* A system whose distributions are not installed is reported "skipped (not installed)", never
  faked; one that fails is reported "failed: <error>".
* The ``sandbox`` scenario (what the command sandbox costs) needs no server and no system: it runs
  ``python -m benchmarks.bench_sandbox`` in a subprocess of its own, which calls the ``shell``
  tool with ``["true"]`` unsandboxed, under bubblewrap and under Landlock (round-robin), and
  counts CPU as its own ``time.process_time()`` plus its reaped children's (``RUSAGE_CHILDREN``).
* The ``websocket`` scenario (the kernel over WebSocket against over HTTP) needs no system either:
  it runs ``python -m benchmarks.bench_ws`` in a subprocess of its own, which starts its own
  scripted servers (a fresh one per run) and, alternating the transports, times one session
  making 50 sequential tool calls (the history growing to ~200 KB: bytes sent per follow-up
  request, client CPU per request, wall per turn), then one streamed response (client CPU per
  delta). CPU is that process's ``time.process_time()``: the server's is not in it. Its figures
  are ``bench_ws``'s medians (no spread); ``--quick`` streams 5,000 deltas (not 20,000) over 2
  runs but keeps the 50 calls.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._environment import PACKAGES as PACKAGES, REPO, environment
from ._targets import targets
from .systems import SYSTEMS, System, installed
from .systems._common import PREFIX, TOOL_COUNT, tool_names

__all__ = [
    "Config",
    "FULL",
    "Pool",
    "QUICK",
    "SCENARIOS",
    "Worker",
    "WorkerError",
    "environment",
    "run_benchmarks",
    "ServerProcess",
    "scripted_server_process",
    "sse_event_count",
    "streaming_script",
    "tool_turn_script",
]

SCENARIOS = ("streaming", "tool_turn", "concurrency", "idle", "sandbox", "websocket")

Log = Callable[[str], None]


# ---- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What to run and how big. :data:`FULL` is the issue's sizes; :data:`QUICK` is the CI smoke."""

    quick: bool
    runs: int
    stream_deltas: int
    tool_turns: int
    levels: tuple[int, ...]
    concurrency_deltas: int
    concurrency_min_events: int
    concurrency_min_wall_s: float
    """A level's run repeats its batch of N sessions until it has streamed this many events (a
    run of a few sessions is too short to time on a shared machine)."""
    peer_levels: tuple[int, ...]
    """Concurrency levels the peers (openai SDK, Agents SDK, pydantic-ai) run at (optional)."""
    idle_sessions: int
    timeout: float
    """Seconds a worker may take to start or to do one run."""
    sandbox_calls: int = 200
    """``shell ["true"]`` calls per run and backend in the sandbox scenario."""
    ws_calls: int = 50
    """Sequential tool calls in the websocket scenario's turn (a request each, plus the first)."""
    ws_output_kib: int = 4
    """Each tool output's size in the websocket scenario (50 × 4 KiB: a ~200 KB history)."""
    ws_deltas: int = 20_000
    """Text deltas of the websocket scenario's streamed response."""
    ws_runs: int | None = None
    """Runs per transport in the websocket scenario; None: ``runs``."""
    systems: tuple[str, ...] = tuple(SYSTEMS)
    scenarios: tuple[str, ...] = SCENARIOS


FULL = Config(
    quick=False,
    runs=5,
    stream_deltas=20_000,
    tool_turns=200,
    levels=(1, 10, 100, 1000),
    concurrency_deltas=500,
    concurrency_min_events=20_000,
    concurrency_min_wall_s=1.0,
    peer_levels=(1, 10, 100),
    idle_sessions=10_000,
    timeout=900.0,
)
QUICK = Config(
    quick=True,
    runs=3,
    stream_deltas=2_000,
    tool_turns=8,
    levels=(1, 10, 50),
    concurrency_deltas=500,
    concurrency_min_events=5_000,
    concurrency_min_wall_s=0.0,
    peer_levels=(),
    idle_sessions=500,
    timeout=120.0,
    sandbox_calls=30,
    ws_deltas=5_000,
    ws_runs=2,
)


# ---- the scripted server -----------------------------------------------------------------------


def streaming_script(deltas: int, chunk: int = 4) -> dict[str, Any]:
    """One reply of ``deltas`` text deltas of ``chunk`` characters, served again and again."""
    return {
        "cycle": True,
        "replies": [{"items": [{"type": "text", "text": "abcd" * (deltas * chunk // 4), "chunk_size": chunk}]}],
    }


def tool_turn_script() -> dict[str, Any]:
    """A turn's two replies, cycled: the model calls the ten no-op tools at once, then answers."""
    calls = [
        {"type": "function_call", "call_id": f"call_{i}", "name": name, "arguments": {"x": i}, "chunk_size": 4}
        for i, name in enumerate(tool_names())
    ]
    answer = {"type": "text", "text": "All ten tools ran; nothing to report.", "chunk_size": 4}
    return {"cycle": True, "replies": [{"items": calls}, {"items": [answer]}]}


def sse_event_count(script: dict[str, Any]) -> list[int]:
    """How many SSE events the server sends for each reply of ``script`` (Responses wire)."""
    from actors.scripted import Script
    from actors.scripted._render import render_responses

    parsed = Script.from_json(script)
    return [len(render_responses(r, tag=str(i), model=parsed.model).events) for i, r in enumerate(parsed.replies)]


@dataclass
class ServerProcess:
    """A running ``python -m actors.scripted`` process."""

    base_url: str
    """``http://127.0.0.1:PORT/v1``"""
    pid: int

    def cpu_seconds(self) -> float | None:
        """The server process's CPU time so far (user + system), from ``/proc``; None elsewhere."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK
        except (OSError, IndexError, ValueError):
            return None


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@contextmanager
def scripted_server_process(script: dict[str, Any], *, events_per_write: int | None = None) -> Iterator[ServerProcess]:
    """Run ``python -m actors.scripted`` on a free loopback port for the block."""
    fd, path = tempfile.mkstemp(prefix="bench-script-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(script, f)
    command = [sys.executable, "-m", "actors.scripted", "--port", "0", "--script", path]
    if events_per_write is not None:
        command += ["--events-per-write", str(events_per_write)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO, env=_child_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"scripted server did not start: {line!r}")
        yield ServerProcess(line.removeprefix("listening on ").rstrip("/") + "/v1", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        Path(path).unlink(missing_ok=True)  # the server read it at start-up


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    env["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    env.pop("OPENAI_API_KEY", None)  # nothing here talks to a real endpoint
    return env


# ---- the workers -------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker failed to start or to run; ``not_installed`` when an import was missing."""

    def __init__(self, message: str, *, not_installed: bool = False) -> None:
        super().__init__(message)
        self.not_installed = not_installed


class Worker:
    """One system's subprocess speaking the ``--serve`` protocol (see ``systems._common``)."""

    def __init__(self, system: System, timeout: float) -> None:
        self.system = system
        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", system.module, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=REPO,
            env=_child_env(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready: dict[str, Any] | None = None
        self._failed: WorkerError | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                self._lines.put(line[len(PREFIX) :])
        self._lines.put(None)

    def _message(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self.close()
            raise WorkerError(f"no answer within {self.timeout:g} s") from None
        if line is None:
            self.proc.wait()
            raise self._died()
        message: dict[str, Any] = json.loads(line)
        return message

    def _died(self) -> WorkerError:
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].strip()
        last = tail.splitlines()[-1] if tail else f"exit status {self.proc.returncode}"
        missing = "ModuleNotFoundError" in tail or "ImportError" in tail
        return WorkerError(last, not_installed=missing)

    def wait_ready(self) -> dict[str, Any]:
        """Wait for the start-up line (imports done); the answer (or the failure) is cached."""
        if self._failed is not None:
            raise self._failed
        if self.ready is None:
            try:
                self.ready = self._message()
            except WorkerError as exc:
                self._failed = exc
                raise
        return self.ready

    def run(self, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
        """One measured run of ``scenario`` with ``params`` (``base_url`` included); raises
        :class:`WorkerError` if it failed."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"run {json.dumps({**params, 'scenario': scenario})}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait()
            raise self._died() from None
        message = self._message()
        if not message.get("ok"):
            raise WorkerError(str(message.get("error")))
        result: dict[str, Any] = message["result"]
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


@dataclass
class SystemRuns:
    """What one system did in one scenario (at one level)."""

    status: str = "ok"
    samples: list[dict[str, Any]] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)


def _status_for(exc: WorkerError) -> str:
    return "skipped (not installed)" if exc.not_installed else f"failed: {exc}"


class Pool:
    """Long-lived workers, one per system, reused across scenarios (one start-up each)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.workers: dict[str, Worker] = {}

    def get(self, system: System) -> Worker:
        w = self.workers.get(system.name)
        if w is None:
            w = self.workers[system.name] = Worker(system, self.timeout)
        return w

    def drop(self, name: str) -> None:
        w = self.workers.pop(name, None)
        if w is not None:
            w.close()

    def close(self) -> None:
        for name in list(self.workers):
            self.drop(name)


def run_round_robin(
    specs: list[tuple[System, ServerProcess, dict[str, Any]]],
    scenario: str,
    runs: int,
    cfg: Config,
    log: Log,
    *,
    warmup: bool | dict[str, Any] = True,
    pool: Pool | None = None,
) -> dict[str, SystemRuns]:
    """One worker per spec ``(system, server, params)`` (from ``pool``, or started here and
    closed at the end), one warm-up run each, then ``runs`` rounds of one measured run per system
    (``warmup`` may be parameter overrides for the warm-up run, e.g. fewer turns). Each sample
    gets ``server_cpu_s``, the server process's CPU time during the run (is the server the
    bottleneck?)."""
    own = pool is None
    pool = pool or Pool(cfg.timeout)
    out: dict[str, SystemRuns] = {}
    workers: dict[str, Worker] = {}
    servers: dict[str, ServerProcess] = {}
    params_of: dict[str, dict[str, Any]] = {}
    try:
        for system, server, params in specs:
            out[system.name] = SystemRuns()
            servers[system.name] = server
            params_of[system.name] = {**params, "base_url": server.base_url}
            workers[system.name] = pool.get(system)
        for name, w in list(workers.items()):
            try:
                out[name].ready = w.wait_ready()
                if warmup:
                    w.run(scenario, {**params_of[name], **(warmup if isinstance(warmup, dict) else {})})
            except WorkerError as exc:
                out[name].status = _status_for(exc)
                log(f"    {name}: {out[name].status}")
                pool.drop(name)
                del workers[name]
        for r in range(runs):
            for name, w in list(workers.items()):
                try:
                    s0 = servers[name].cpu_seconds()
                    sample = w.run(scenario, params_of[name])
                    s1 = servers[name].cpu_seconds()
                    sample["server_cpu_s"] = s1 - s0 if s0 is not None and s1 is not None else None
                    sample["load1"] = round(os.getloadavg()[0], 2)
                    out[name].samples.append(sample)
                except WorkerError as exc:
                    out[name].status = _status_for(exc)
                    log(f"    {name}: {out[name].status}")
                    pool.drop(name)
                    del workers[name]
            log(f"    round {r + 1}/{runs} done (load {os.getloadavg()[0]:.2f})")
    finally:
        if own:
            pool.close()
    return out


def run_fresh(
    specs: list[tuple[System, ServerProcess, dict[str, Any]]], scenario: str, runs: int, cfg: Config, log: Log
) -> dict[str, SystemRuns]:
    """Like :func:`run_round_robin`, but a fresh process for every measured run (no harness-level
    warm-up: the scenario warms itself up in-process), for figures such as peak RSS that one
    process cannot measure twice. All the processes start at once (their imports overlap; an
    idle worker waits on its stdin and costs no CPU), then run one at a time, round-robin."""
    out = {system.name: SystemRuns() for system, _, _ in specs}
    pools = [Pool(cfg.timeout) for _ in range(runs)]
    try:
        for pool in pools:
            for system, _, _ in specs:
                pool.get(system)
        # every process done importing before the first measurement (failures are cached and
        # reported by run_round_robin)
        for pool in pools:
            for w in pool.workers.values():
                try:
                    w.wait_ready()
                except WorkerError:
                    pass
        for r, pool in enumerate(pools):
            live = [spec for spec in specs if out[spec[0].name].status == "ok"]
            for name, got in run_round_robin(live, scenario, 1, cfg, lambda _m: None, warmup=False, pool=pool).items():
                out[name].status = got.status
                out[name].ready = got.ready or out[name].ready
                out[name].samples.extend(got.samples)
                if got.status != "ok":
                    log(f"    {name}: {got.status}")
            pool.close()
            log(f"    run {r + 1}/{runs} done (load {os.getloadavg()[0]:.2f})")
    finally:
        for pool in pools:
            pool.close()
    return out


# ---- statistics --------------------------------------------------------------------------------


def stats(values: list[float | None], scale: float = 1.0) -> dict[str, Any] | None:
    """Median, min, max (and every sample) of ``values`` times ``scale``; None when empty."""
    xs = [v * scale for v in values if v is not None and v == v]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "samples": xs}


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not b["median"]:
        return None
    return float(a["median"] / b["median"])


def _paired(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, float] | None:
    """The spread of the per-round ratios a/b (the rounds are interleaved, so pairs share a load)."""
    if not a or not b or len(a["samples"]) != len(b["samples"]):
        return None
    rs = [x / y for x, y in zip(a["samples"], b["samples"]) if y]
    return {"median": statistics.median(rs), "min": min(rs), "max": max(rs)} if rs else None


def _specs(cfg: Config, scenario: str) -> tuple[list[System], dict[str, str]]:
    """The systems to run for ``scenario``, and the status of those that will not run."""
    run: list[System] = []
    skipped: dict[str, str] = {}
    for name in cfg.systems:
        system = SYSTEMS[name]
        if scenario not in system.scenarios:
            continue
        if not installed(system):
            skipped[name] = "skipped (not installed)"
        else:
            run.append(system)
    return run, skipped


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- the scenarios -----------------------------------------------------------------------------


def scenario_streaming(cfg: Config, log: Log, pool: Pool) -> dict[str, Any]:
    script = streaming_script(cfg.stream_deltas)
    n_events = sse_event_count(script)[0]
    systems, skipped = _specs(cfg, "streaming")
    log(
        f"  streaming: {cfg.stream_deltas} deltas ({n_events} SSE events) × {cfg.runs} runs: {', '.join(s.name for s in systems)}"
    )
    load0 = _load()
    with scripted_server_process(script) as server:
        runs = run_round_robin([(s, server, {}) for s in systems], "streaming", cfg.runs, cfg, log, pool=pool)
    results: dict[str, Any] = {name: {"status": status} for name, status in skipped.items()}
    for name, r in runs.items():
        entry: dict[str, Any] = {"status": r.status, "versions": r.ready.get("versions", {})}
        if r.status == "ok":
            entry["cpu_us_per_event"] = stats([s["cpu_s"] / n_events for s in r.samples], 1e6)
            entry["ttft_ms"] = stats([s["ttft_s"] for s in r.samples], 1e3)
            entry["wall_ms"] = stats([s["wall_s"] for s in r.samples], 1e3)
            entry["deltas_seen"] = [s.get("deltas_seen") for s in r.samples]
        results[name] = entry
    cpu = {n: e.get("cpu_us_per_event") for n, e in results.items()}
    ratios = {
        "kernel_to_floor": _ratio(cpu.get("kernel"), cpu.get("floor")),
        "openai_sdk_to_kernel": _ratio(cpu.get("openai_sdk"), cpu.get("kernel")),
        "agents_sdk_to_kernel": _ratio(cpu.get("agents_sdk"), cpu.get("kernel")),
        "pydantic_ai_to_kernel": _ratio(cpu.get("pydantic_ai"), cpu.get("kernel")),
    }
    paired = {"kernel_to_floor": _paired(cpu.get("kernel"), cpu.get("floor"))}
    return {
        "params": {"deltas": cfg.stream_deltas, "sse_events": n_events, "runs": cfg.runs, "chunk_chars": 4},
        "results": results,
        "ratios": ratios,
        "paired_ratios": paired,
        "load_avg": {"start": load0, "end": _load()},
    }


def scenario_tool_turn(cfg: Config, log: Log, pool: Pool) -> dict[str, Any]:
    script = tool_turn_script()
    systems, skipped = _specs(cfg, "tool_turn")
    log(
        f"  tool_turn: {cfg.tool_turns} turns of {TOOL_COUNT} parallel calls × {cfg.runs} runs: {', '.join(s.name for s in systems)}"
    )
    load0 = _load()
    params = {"turns": cfg.tool_turns}
    # one server per system: the script's cursor (calls, answer, calls, ...) is per server
    with _servers(script, len(systems)) as servers:
        runs = run_round_robin(
            [(s, sv, params) for s, sv in zip(systems, servers)],
            "tool_turn",
            cfg.runs,
            cfg,
            log,
            warmup={"turns": min(cfg.tool_turns, 3)},
            pool=pool,
        )
    results: dict[str, Any] = {name: {"status": status} for name, status in skipped.items()}
    for name, r in runs.items():
        entry: dict[str, Any] = {"status": r.status, "versions": r.ready.get("versions", {})}
        if r.status == "ok":
            entry["cpu_us_per_turn"] = stats([s["cpu_s"] / s["turns"] for s in r.samples], 1e6)
            entry["wall_ms_per_turn"] = stats([s["wall_s"] / s["turns"] for s in r.samples], 1e3)
        results[name] = entry
    cpu = {n: e.get("cpu_us_per_turn") for n, e in results.items()}
    ratios = {f"{n}_to_kernel": _ratio(cpu.get(n), cpu.get("kernel")) for n in results if n != "kernel"}
    paired = {f"{n}_to_kernel": _paired(cpu.get(n), cpu.get("kernel")) for n in results if n != "kernel"}
    return {
        "params": {"turns": cfg.tool_turns, "tools_per_turn": TOOL_COUNT, "requests_per_turn": 2, "runs": cfg.runs},
        "results": results,
        "ratios": ratios,
        "paired_ratios": paired,
        "load_avg": {"start": load0, "end": _load()},
    }


@contextmanager
def _servers(script: dict[str, Any], n: int) -> Iterator[list[ServerProcess]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(scripted_server_process(script)) for _ in range(n)]


def scenario_concurrency(cfg: Config, log: Log, pool: Pool) -> dict[str, Any]:
    script = streaming_script(cfg.concurrency_deltas)
    n_events = sse_event_count(script)[0]
    systems, skipped = _specs(cfg, "concurrency")
    load0 = _load()
    results: dict[str, Any] = {name: {"status": status, "levels": {}} for name, status in skipped.items()}
    for s in systems:
        results[s.name] = {"status": "ok", "levels": {}}
    with scripted_server_process(script) as server:
        for level in cfg.levels:
            here = [s for s in systems if s.name in ("kernel", "floor") or level in cfg.peer_levels]
            batches = max(1, math.ceil(cfg.concurrency_min_events / (level * n_events)))
            log(
                f"  concurrency: {level} sessions × {cfg.concurrency_deltas} deltas"
                f"{f' × {batches} batches' if batches > 1 else ''} × {cfg.runs} runs: {', '.join(s.name for s in here)}"
            )
            params = {"sessions": level, "batches": batches, "min_wall_s": cfg.concurrency_min_wall_s}
            runs = run_fresh([(s, server, params) for s in here], "concurrency", cfg.runs, cfg, log)
            for name, r in runs.items():
                entry: dict[str, Any] = {"status": r.status, "batches": batches}
                results[name].setdefault("versions", r.ready.get("versions", {}))
                if r.status == "ok":
                    # a run goes on past `batches` until it has lasted min_wall_s: count its own
                    entry["batches"] = int(statistics.median(s["batches"] for s in r.samples))
                    events = [level * n_events * s["batches"] for s in r.samples]
                    entry["events_per_s"] = stats([e / s["wall_s"] for e, s in zip(events, r.samples)])
                    entry["cpu_us_per_event"] = stats([s["cpu_s"] / e for e, s in zip(events, r.samples)], 1e6)
                    entry["ttft_p50_ms"] = stats([s["ttft_p50_s"] for s in r.samples], 1e3)
                    entry["ttft_p99_ms"] = stats([s["ttft_p99_s"] for s in r.samples], 1e3)
                    entry["peak_rss_mib"] = stats([s["peak_rss"] for s in r.samples], 1 / 2**20)
                    entry["rss_per_session_kib"] = stats(
                        [max(0, s["peak_rss"] - s["rss_before"]) / level for s in r.samples], 1 / 1024
                    )
                    # /proc counts clock ticks (10 ms): meaningless for a short run
                    entry["server_cpu_pct"] = stats(
                        [
                            s["server_cpu_s"] / s["wall_s"]
                            if s.get("server_cpu_s") is not None and s["wall_s"] >= 0.5
                            else None
                            for s in r.samples
                        ],
                        100,
                    )
                results[name]["levels"][str(level)] = entry
    kernel = results.get("kernel", {}).get("levels", {})
    top = str(max(cfg.levels))
    tput = {lvl: e.get("events_per_s") for lvl, e in kernel.items()}
    ratios = {f"kernel_{top}_to_10": _ratio(tput.get(top), tput.get("10")) if "10" in tput else None}
    return {
        "params": {
            "levels": list(cfg.levels),
            "peer_levels": list(cfg.peer_levels),
            "deltas": cfg.concurrency_deltas,
            "sse_events_per_session": n_events,
            "min_events_per_run": cfg.concurrency_min_events,
            "min_wall_s_per_run": cfg.concurrency_min_wall_s,
            "runs": cfg.runs,
        },
        "results": results,
        "ratios": ratios,
        "load_avg": {"start": load0, "end": _load()},
    }


def scenario_idle(cfg: Config, log: Log, pool: Pool) -> dict[str, Any]:
    systems, skipped = _specs(cfg, "idle")
    n = cfg.idle_sessions
    load0 = _load()
    results: dict[str, Any] = {name: {"status": status} for name, status in skipped.items()}
    # the sessions never talk to the server, but a base URL is part of the settings
    with scripted_server_process(streaming_script(1)) as server:
        log(f"  idle: {n} open sessions × {cfg.runs} runs (a fresh process each): {', '.join(s.name for s in systems)}")
        sessions = run_fresh([(s, server, {"sessions": n}) for s in systems], "idle", cfg.runs, cfg, log)
        log(f"  idle: {n} bare waiting tasks (the benchmark's own holder task, for reference)")
        tasks = run_fresh(
            [(s, server, {"sessions": n, "tasks_only": True}) for s in systems],
            "idle",
            1 if cfg.quick else cfg.runs,
            cfg,
            log,
        )
    for s in systems:
        r, t = sessions[s.name], tasks[s.name]
        entry: dict[str, Any] = {"status": r.status, "versions": r.ready.get("versions", {})}
        if r.status == "ok":
            entry["rss_per_session_kib"] = stats([x["rss_per_session"] for x in r.samples], 1 / 1024)
            entry["holder_task_kib"] = stats([x["rss_per_session"] for x in t.samples], 1 / 1024)
            entry["open_cpu_us_per_session"] = stats([x["open_cpu_s"] / n for x in r.samples], 1e6)
            entry["rss_open_mib"] = stats([x["rss_open"] for x in r.samples], 1 / 2**20)
            log(f"    {s.name}: {entry['rss_per_session_kib']['median']:.1f} KiB per idle session")
        results[s.name] = entry
    return {
        "params": {"sessions": n, "runs": cfg.runs},
        "results": results,
        "load_avg": {"start": load0, "end": _load()},
    }


def _run_bench_module(module: str, args: list[str], limit: float, log: Log) -> tuple[dict[str, Any] | None, str]:
    """Run ``python -m <module> <args> --json FILE`` in a subprocess of its own, relaying its
    progress (the stderr lines indented four spaces) and killing it after ``limit`` seconds.
    Returns the JSON it wrote, or None and why it gave none (its last stderr line, or the limit).

    The module runs in a process group of its own, and a kill (the limit, or the harness
    interrupted) kills the group: the processes it started (``bench_ws``'s scripted servers) hold
    its stderr open and would outlive it, and the harness would wait for that pipe's end forever."""
    fd, path = tempfile.mkstemp(prefix=f"{module.rpartition('.')[2]}-", suffix=".json")
    os.close(fd)
    command = [sys.executable, "-m", module, *args, "--json", path]
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=_child_env(),
            start_new_session=True,
        )
        assert proc.stderr is not None
        timed_out = threading.Event()

        def kill_group() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group is gone already
                pass

        def kill() -> None:
            timed_out.set()
            kill_group()

        killer = threading.Timer(limit, kill)
        killer.start()
        tail: list[str] = []
        try:
            for line in proc.stderr:  # its progress, as it comes
                line = line.rstrip("\n")
                tail = (tail + [line])[-20:]
                if line.startswith("    "):
                    log(line)
            proc.wait()
        finally:
            killer.cancel()
            if proc.poll() is None:  # interrupted: leave nothing of it running
                kill_group()
                proc.wait()
            proc.stderr.close()
        text = Path(path).read_text()
        if proc.returncode != 0 or not text:
            why = tail[-1] if tail else f"exit status {proc.returncode}"
            if timed_out.is_set():
                why = f"no result within {limit:g} s"
            return None, why
        doc: dict[str, Any] = json.loads(text)
        return doc, ""
    finally:
        Path(path).unlink(missing_ok=True)


def scenario_sandbox(cfg: Config, log: Log, pool: Pool) -> dict[str, Any]:
    """What the command sandbox costs: ``python -m benchmarks.bench_sandbox`` in a subprocess of
    its own (its CPU figures are its own process's and its children's, nothing of the harness's)."""
    log(f'  sandbox: shell ["true"] × {cfg.sandbox_calls} calls × {cfg.runs} runs: none, bwrap, landlock')
    load0 = _load()
    args = ["--calls", str(cfg.sandbox_calls), "--runs", str(cfg.runs)]
    # a worker's limit is per run
    doc, why = _run_bench_module("benchmarks.bench_sandbox", args, cfg.timeout * cfg.runs, log)
    if doc is None:
        doc = {
            "params": {"calls": cfg.sandbox_calls, "runs": cfg.runs, "command": ["true"]},
            "results": {"none": {"status": f"failed: {why}", "label": "bench_sandbox"}},
            "ratios": {},
            "paired_ratios": {},
        }
    doc["params"]["isolation"] = "subprocess: python -m benchmarks.bench_sandbox"
    doc["load_avg"] = {"start": load0, "end": _load()}
    return doc


_TRANSPORTS = {"http": "HTTP + SSE", "websocket": "WebSocket"}
"""The websocket scenario's rows: ``bench_ws``'s keys and their labels."""
_WS_FIGURES = (
    "bytes_first_request",
    "bytes_per_follow_up",
    "bytes_last_request",
    "cpu_ms_per_request",
    "wall_ms_per_turn",
)


def scenario_websocket(cfg: Config, log: Log, pool: Pool) -> dict[str, Any]:
    """The kernel over WebSocket against over HTTP: ``python -m benchmarks.bench_ws`` in a
    subprocess of its own (its CPU figures are its own process's: the scripted servers it starts
    run in processes of theirs). ``results`` has a row per transport (``bench_ws``'s medians and
    the streaming CPU per delta), ``ratios`` WebSocket ÷ HTTP, ``bench_ws`` the JSON it wrote."""
    runs = cfg.ws_runs or cfg.runs
    log(
        f"  websocket: {cfg.ws_calls} sequential tool calls ({cfg.ws_output_kib} KiB outputs), then "
        f"{cfg.ws_deltas} deltas streamed × {runs} runs: {', '.join(_TRANSPORTS)}"
    )
    load0 = _load()
    args = ["--calls", str(cfg.ws_calls), "--output-kib", str(cfg.ws_output_kib)]
    args += ["--deltas", str(cfg.ws_deltas), "--runs", str(runs)]
    raw, why = _run_bench_module("benchmarks.bench_ws", args, cfg.timeout * runs, log)
    results: dict[str, Any] = {}
    ratios: dict[str, float | None] = {
        "bytes_per_request": None,
        "cpu_per_request": None,
        "wall_per_turn": None,
        "streaming_cpu_per_delta": None,
    }
    if raw is None:
        for name, label in _TRANSPORTS.items():
            results[name] = {"status": f"failed: {why}", "label": label}
    else:
        streaming = raw.get("streaming_us_per_delta") or {}
        for name, label in _TRANSPORTS.items():
            row = raw[name]
            results[name] = {
                "status": "ok",
                "label": label,
                "requests": int(row["requests"]),
                "incremental_requests": int(row["incremental"]),
                **{key: row[key] for key in _WS_FIGURES},
                "streaming_us_per_delta": streaming.get(name),
            }
        ratios.update(
            {key: raw["ratios"].get(key) for key in ("bytes_per_request", "cpu_per_request", "wall_per_turn")}
        )
        ratios["streaming_cpu_per_delta"] = streaming.get("ratio")
    return {
        "params": {
            "calls": cfg.ws_calls,
            "output_kib": cfg.ws_output_kib,
            "deltas": cfg.ws_deltas,
            "runs": runs,
            "isolation": "subprocess: python -m benchmarks.bench_ws",
        },
        "results": results,
        "ratios": ratios,
        "bench_ws": raw,
        "load_avg": {"start": load0, "end": _load()},
    }


_RUNNERS: dict[str, Callable[[Config, Log, Pool], dict[str, Any]]] = {
    "streaming": scenario_streaming,
    "tool_turn": scenario_tool_turn,
    "concurrency": scenario_concurrency,
    "idle": scenario_idle,
    "sandbox": scenario_sandbox,
    "websocket": scenario_websocket,
}


# ---- the whole run -----------------------------------------------------------------------------


def run_benchmarks(cfg: Config, log: Log) -> dict[str, Any]:
    """Run the configured scenarios; return the results document (``results.json``)."""
    started = time.time()
    doc: dict[str, Any] = {
        "schema": 1,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "config": asdict(cfg),
        "environment": environment(),
        "load_avg": {"start": _load()},
        "systems": {
            name: {"label": s.label, "note": s.note, "installed": installed(s), "scenarios": list(s.scenarios)}
            for name, s in SYSTEMS.items()
            if name in cfg.systems
        },
        "scenarios": {},
    }
    pool = Pool(cfg.timeout)  # streaming and tool turn share one worker per system
    try:
        for scenario in cfg.scenarios:
            log(f"scenario {scenario}")
            t0 = time.perf_counter()
            if scenario in ("concurrency", "idle", "sandbox", "websocket"):
                pool.close()  # nothing else should hold the CPU or memory now
            doc["scenarios"][scenario] = _RUNNERS[scenario](cfg, log, pool)
            doc["scenarios"][scenario]["seconds"] = round(time.perf_counter() - t0, 1)
    finally:
        pool.close()
    doc["targets"] = targets(doc["scenarios"], cfg)
    doc["load_avg"]["end"] = _load()
    doc["seconds"] = round(time.time() - started, 1)
    return doc
