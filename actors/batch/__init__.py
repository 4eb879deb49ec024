"""Batch runs: many independent tasks, each one turn of a fresh session, with exactly one result
record per task — in one process (here) or across a Ray cluster (``actors.batch._ray``, the
optional ``ray`` extra).

::

    from actors.batch import load_tasks, run_batch, LocalRateLimiter
    from actors import ModelSettings

    tasks, bad_lines = load_tasks("tasks.jsonl")        # bad lines: TaskLineError(line, message)
    summary = await run_batch(
        tasks,
        out_dir="runs/2025-01-01",                     # results.jsonl + rollouts/<id>.jsonl
        concurrency=100,                                # sessions at once, one shared ModelActor
        model=ModelSettings(base_url=..., model=..., api_key=...),
        limiter=LocalRateLimiter(rpm=500, tpm=2_000_000),
    )
    print(summary.completed, summary.failed, summary.tasks_per_s)

Run it again on the same ``out_dir`` after a crash (or a Ctrl-C): finished tasks are skipped,
the others run once. Command line: ``agent-kernel batch tasks.jsonl --out DIR``.

Modules: ``_tasks`` (the task file, :class:`BatchTask`), ``_results`` (:class:`TaskResult`,
``results.jsonl``, the summary and progress events), ``_limiter`` (request budgets),
``_local`` (:func:`run_task`, :func:`run_batch`), ``_pool`` (:class:`ModelPool`, the task's model
client), ``_cpu`` (CPU accounting), ``_common`` (what both drivers share: the output layout, the
frame of a run). The Ray backend: ``_ray`` (``run_batch_ray``), ``_ray_limiter`` (the
cluster-wide limiter), ``_ray_worker`` (the worker actor), ``_ray_driver`` (dispatch, recording).
"""

from ._common import (
    Progress as Progress,
    ToolsFactory as ToolsFactory,
)
from ._limiter import (
    LocalRateLimiter as LocalRateLimiter,
    RateLimitedModel as RateLimitedModel,
    RateLimiter as RateLimiter,
    estimate_prompt_tokens as estimate_prompt_tokens,
)
from ._local import (
    run_batch as run_batch,
    run_task as run_task,
)
from ._pool import (
    ModelPool as ModelPool,
    open_model_pool as open_model_pool,
)
from ._results import (
    RESULTS_FILE as RESULTS_FILE,
    BatchEvent as BatchEvent,
    BatchFinished as BatchFinished,
    BatchStarted as BatchStarted,
    BatchStats as BatchStats,
    BatchSummary as BatchSummary,
    ResultsFile as ResultsFile,
    ResultsFileError as ResultsFileError,
    ResultsFileLocked as ResultsFileLocked,
    TaskFinished as TaskFinished,
    TaskResult as TaskResult,
    TaskStarted as TaskStarted,
    TaskStatus as TaskStatus,
    batch_event_to_dict as batch_event_to_dict,
    read_results as read_results,
)
from ._tasks import (
    BUILTIN_TOOL_NAMES as BUILTIN_TOOL_NAMES,
    BatchTask as BatchTask,
    TaskFormatError as TaskFormatError,
    TaskLineError as TaskLineError,
    load_tasks as load_tasks,
    parse_tasks as parse_tasks,
    safe_id as safe_id,
)

__all__ = [
    "BUILTIN_TOOL_NAMES",
    "BatchEvent",
    "BatchFinished",
    "BatchStarted",
    "BatchStats",
    "BatchSummary",
    "BatchTask",
    "LocalRateLimiter",
    "ModelPool",
    "Progress",
    "RESULTS_FILE",
    "RateLimitedModel",
    "RateLimiter",
    "ResultsFile",
    "ResultsFileError",
    "ResultsFileLocked",
    "TaskFinished",
    "TaskFormatError",
    "TaskLineError",
    "TaskResult",
    "TaskStarted",
    "TaskStatus",
    "ToolsFactory",
    "batch_event_to_dict",
    "estimate_prompt_tokens",
    "load_tasks",
    "open_model_pool",
    "parse_tasks",
    "read_results",
    "run_batch",
    "run_task",
    "safe_id",
]
