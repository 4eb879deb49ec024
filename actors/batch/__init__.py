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
``_local`` (:func:`run_task`, :func:`run_batch`, CPU accounting).
"""

from ._limiter import (
    LocalRateLimiter as LocalRateLimiter,
)
from ._limiter import (
    RateLimitedModel as RateLimitedModel,
)
from ._limiter import (
    RateLimiter as RateLimiter,
)
from ._limiter import (
    estimate_prompt_tokens as estimate_prompt_tokens,
)
from ._local import (
    ModelPool as ModelPool,
)
from ._local import (
    Progress as Progress,
)
from ._local import (
    ToolsFactory as ToolsFactory,
)
from ._local import (
    open_model_pool as open_model_pool,
)
from ._local import (
    run_batch as run_batch,
)
from ._local import (
    run_task as run_task,
)
from ._results import (
    RESULTS_FILE as RESULTS_FILE,
)
from ._results import (
    BatchEvent as BatchEvent,
)
from ._results import (
    BatchFinished as BatchFinished,
)
from ._results import (
    BatchStarted as BatchStarted,
)
from ._results import (
    BatchStats as BatchStats,
)
from ._results import (
    BatchSummary as BatchSummary,
)
from ._results import (
    ResultsFile as ResultsFile,
)
from ._results import (
    ResultsFileError as ResultsFileError,
)
from ._results import (
    ResultsFileLocked as ResultsFileLocked,
)
from ._results import (
    TaskFinished as TaskFinished,
)
from ._results import (
    TaskResult as TaskResult,
)
from ._results import (
    TaskStarted as TaskStarted,
)
from ._results import (
    TaskStatus as TaskStatus,
)
from ._results import (
    batch_event_to_dict as batch_event_to_dict,
)
from ._results import (
    read_results as read_results,
)
from ._tasks import (
    BUILTIN_TOOL_NAMES as BUILTIN_TOOL_NAMES,
)
from ._tasks import (
    BatchTask as BatchTask,
)
from ._tasks import (
    TaskFormatError as TaskFormatError,
)
from ._tasks import (
    TaskLineError as TaskLineError,
)
from ._tasks import (
    load_tasks as load_tasks,
)
from ._tasks import (
    parse_tasks as parse_tasks,
)
from ._tasks import (
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
