"""The model clients of a batch: :class:`ModelPool` (one shared ModelActor per model name) and
:func:`open_model_pool`, the client a task uses (:func:`_task_client`), and the thin wrappers
around a client — per-task event counting (:class:`_Counted`), the ``model`` name tag, and the
scrubbing of the API key from errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import trio

from actors.model import ModelActor, ModelSettings, open_model_actor
from kernel import ModelClient, ModelEvent, Prompt

from ._results import BatchStats

__all__ = ["ModelPool", "open_model_pool"]
from actors.secrets import RedactingClient, Redactor


class _SetupError(Exception):
    """A task cannot start (bad cwd, a model the batch cannot provide...): the task fails."""


def _cannot_switch(model: str) -> _SetupError:
    return _SetupError(
        f"the task asks for model {model!r}, but the batch's model is a client that cannot switch "
        "models (pass ModelSettings or a ModelActor)"
    )


@attrs.define(eq=False)
class _Counts:
    events: int = 0


class _Counted:
    """Counts model stream events (per task, and in the batch's live stats)."""

    def __init__(self, inner: ModelClient, counts: _Counts, stats: BatchStats | None) -> None:
        self._inner = inner
        self._counts = counts
        self._stats = stats
        self.model = getattr(inner, "model", "")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[AsyncIterator[Sequence[ModelEvent]]]:
        async with self._inner.stream(prompt) as batches:
            yield _CountedBatches(batches, self._counts, self._stats)


class _CountedBatches:
    __slots__ = ("_inner", "_counts", "_stats")

    def __init__(self, inner: AsyncIterator[Sequence[ModelEvent]], counts: _Counts, stats: BatchStats | None) -> None:
        self._inner = inner
        self._counts = counts
        self._stats = stats

    def __aiter__(self) -> _CountedBatches:
        return self

    async def __anext__(self) -> Sequence[ModelEvent]:
        batch = await self._inner.__anext__()
        n = len(batch)
        self._counts.events += n
        if self._stats is not None:
            self._stats.events += n
        return batch


class _NameTag:
    """Gives a client the ``model`` attribute open_session writes in the rollout header."""

    def __init__(self, inner: ModelClient, model: str) -> None:
        self._inner = inner
        self.model = model

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def stream(self, prompt: Prompt) -> Any:
        return self._inner.stream(prompt)


class ModelPool:
    """The model clients of a batch: one shared :class:`~actors.model.ModelActor` (one HTTP
    client and connection pool for every session) for the batch's model, and one more per other
    model name that tasks ask for (``BatchTask.model``), started on first use. Made by
    :func:`open_model_pool`; pass it as ``model=`` to :func:`run_task`."""

    def __init__(self, default: ModelClient, settings: ModelSettings | None, nursery: trio.Nursery) -> None:
        self._default = default
        self.settings = settings
        self._nursery = nursery
        self._others: dict[str, ModelClient] = {}
        self.actors: list[ModelActor] = []

    @property
    def max_retries(self) -> int | None:
        """The settings' retry budget, when the pool has settings."""
        return self.settings.stream_max_retries if self.settings is not None else None

    def client_for(self, model: str | None) -> ModelClient:
        """The client for a task's ``model`` (``None``: the batch's). Raises an error (the task
        fails) when the pool was given a bare :class:`kernel.ModelClient` and the task names another model."""
        settings = self.settings
        if model is None or (settings is not None and model == settings.model):
            return self._default
        client = self._others.get(model)
        if client is not None:
            return client
        if settings is None:
            if getattr(self._default, "model", None) == model:
                return self._default
            raise _cannot_switch(model)
        other = attrs.evolve(settings, model=model)
        actor = ModelActor(other)
        self.actors.append(actor)
        # the actor's client may be used before its task runs: requests wait on its channel
        self._nursery.start_soon(actor.run)
        client = self._others[model] = _wrap_settings(actor.client(), other)
        return client


@asynccontextmanager
async def open_model_pool(model: ModelSettings | ModelActor | ModelClient | ModelPool) -> AsyncIterator[ModelPool]:
    """A :class:`ModelPool` for the block: ``ModelSettings`` — a ModelActor is started and
    shared; a running ``ModelActor`` — shared as it is; any other :class:`kernel.ModelClient` —
    used as it is (tasks cannot switch models then); a ``ModelPool`` — yielded as it is."""
    if isinstance(model, ModelPool):
        yield model
        return
    async with trio.open_nursery() as nursery:
        try:
            if isinstance(model, ModelSettings):
                actor = ModelActor(model)
                await nursery.start(actor.run)
                pool = ModelPool(_wrap_settings(actor.client(), model), model, nursery)
                pool.actors.append(actor)
            elif isinstance(model, ModelActor):
                pool = ModelPool(_wrap_settings(model.client(), model.settings), model.settings, nursery)
                pool.actors.append(model)
            else:
                pool = ModelPool(model, None, nursery)
            yield pool
        finally:
            nursery.cancel_scope.cancel()


def _wrap_settings(client: ModelClient, settings: ModelSettings) -> ModelClient:
    if settings.api_key:  # a server may echo the key back in a spelling the HTTP layer does not redact
        return RedactingClient(client, Redactor([settings.api_key]), model=settings.model)
    return _NameTag(client, settings.model)


async def _task_client(
    model: ModelActor | ModelClient | ModelPool, task_model: str | None, stack: AsyncExitStack
) -> tuple[ModelClient, ModelSettings | None]:
    """The client for a task asking for ``task_model`` (``None``: the batch's), and the settings
    behind it (``None`` for a bare client). A ModelActor serving another model gets a ModelActor
    of the task's model, open for the rest of ``stack``."""
    if isinstance(model, ModelPool):
        return model.client_for(task_model), model.settings
    if isinstance(model, ModelActor):
        settings = model.settings
        if task_model is not None and task_model != settings.model:
            settings = attrs.evolve(settings, model=task_model)
            actor = await stack.enter_async_context(open_model_actor(settings))
        else:
            actor = model
        return _wrap_settings(actor.client(), settings), settings
    if task_model is not None and getattr(model, "model", None) != task_model:
        raise _cannot_switch(task_model)
    return model, None
