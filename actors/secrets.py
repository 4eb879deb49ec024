"""Secrets that stay secret: every secret value the process knows is replaced by ``[REDACTED]``
before anything is recorded.

A :class:`Redactor` holds the values (the API key, secret-looking extra headers, the environment
variables the tools' :class:`~actors.tools.sandbox.EnvironmentPolicy` withholds) and scrubs text,
tool outputs and errors. A session applies one at the three places a secret can enter a record
(see :func:`actors.session.open_session`'s ``redact``):

* tool outputs, through :class:`RedactingToolExecutor` — so a command that reads
  ``/proc/$PPID/environ``, or a tool that returns a key, shows ``[REDACTED]`` to the model, the
  history, the events and the rollout;
* model errors, through :class:`RedactingClient` — a server that echoes the key back in an error
  body;
* turn failures and retry notices (the session's event sink and turn outcomes).

Model text is not scanned (a model cannot repeat a key it never saw), so streaming costs nothing.
What cannot be caught: a secret the process does not know, or one a tool transforms (base64,
split across lines, cut by output truncation).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Generic

import attrs

from kernel.errors import KernelError
from kernel.items import (
    CustomToolCallOutput,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    McpToolCallOutput,
    ResponseInputItem,
    ResponseItem,
    ToolSearchOutput,
)
from kernel.prompt import Prompt
from kernel.stream import FallbackTransport, ModelClient, ModelEvent
from kernel.tools import CallT, CompletedResponseItem, FatalToolError, RespondToModel, ToolExecutor

from .tools.sandbox import EnvironmentPolicy

if TYPE_CHECKING:
    from .model import ModelSettings

__all__ = [
    "REDACTED",
    "MIN_SECRET_LENGTH",
    "Redactor",
    "RedactingClient",
    "RedactingToolExecutor",
    "looks_secret_header",
]

REDACTED: Final = "[REDACTED]"
"""What a secret is replaced with."""

MIN_SECRET_LENGTH: Final = 8
"""Shorter values are not taken as secrets (redacting ``"1"`` or ``"true"`` would garble everything)."""

_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|pass|credential|session|signature", re.IGNORECASE)
# an environment value that is one plain word ("subprocess", "disabled") is a setting, not a secret
_PLAIN_WORD = re.compile(r"[a-z]{1,16}|[A-Z]{1,16}")


def looks_secret_header(name: str) -> bool:
    """Whether a header named ``name`` carries a credential (``Authorization``, ``X-Api-Key``,
    ``Cookie``, ``*-Token``…)."""
    return bool(_SECRET_HEADER.search(name))


def _forms(secret: str) -> list[str]:
    """The spellings of ``secret`` an output may hold: as it is, without surrounding blanks, and
    JSON-escaped (a tool that returns JSON, like ``shell``, escapes quotes and backslashes)."""
    out = [secret]
    stripped = secret.strip()
    if stripped != secret:
        out.append(stripped)
    for form in list(out):
        for ensure_ascii in (False, True):
            escaped = json.dumps(form, ensure_ascii=ensure_ascii)[1:-1]
            if escaped != form:
                out.append(escaped)
    return [f for f in out if len(f) >= MIN_SECRET_LENGTH]


@functools.cache
def _process_environ() -> Mapping[str, str]:
    """This process's environment as the kernel shows it to other processes
    (``/proc/self/environ``: the one the process started with, which still holds variables
    removed from ``os.environ`` since); empty where there is no such file. Read once: it does
    not change after ``exec``."""
    try:
        with open("/proc/self/environ", "rb") as f:
            data = f.read()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for entry in data.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            out[os.fsdecode(name)] = os.fsdecode(value)
    return out


@functools.lru_cache(maxsize=16)
def _withheld(items: tuple[tuple[str, str], ...], patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The values an environment policy with these exclusion ``patterns`` withholds, but one-word
    settings. Cached: every session of a process usually sees the same environment, and the
    pattern matching costs ~0.3 ms for a few dozen variables."""
    policy = EnvironmentPolicy(exclude=patterns, ignore_default_excludes=True)
    withheld = policy.secret_values(dict(items), min_length=MIN_SECRET_LENGTH)
    return tuple(v for v in withheld if not _PLAIN_WORD.fullmatch(v))


def _withheld_from(source: Mapping[str, str], patterns: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`_withheld` of ``source``. For ``os.environ`` the cache key is its raw bytes table
    (``os.environ._data``: no decoding of every name and value, which cost ~0.1 ms per session)."""
    raw = getattr(source, "_data", None) if source is os.environ else None
    if isinstance(raw, dict):
        return _withheld_raw(tuple(raw.items()), patterns)
    return _withheld(tuple(source.items()), patterns)


@functools.lru_cache(maxsize=16)
def _withheld_raw(items: tuple[tuple[bytes, bytes], ...], patterns: tuple[str, ...]) -> tuple[str, ...]:
    decoded = tuple((os.fsdecode(k), os.fsdecode(v)) for k, v in items)
    return _withheld(decoded, patterns)


class Redactor:
    """Replaces each known secret value with ``[REDACTED]``.

    ``secrets``: the values (strings shorter than :data:`MIN_SECRET_LENGTH` are ignored; each is
    also matched JSON-escaped). Matching is exact and case-sensitive, longest value first, in one
    pass (one compiled alternation). A redactor without secrets is falsy and returns everything
    unchanged at once. ``repr`` never shows a value.

    Build the usual one with :meth:`from_settings`; add values with :meth:`with_secrets`.
    """

    __slots__ = ("secrets", "_pattern", "_single")

    secrets: tuple[str, ...]
    """Every spelling matched, longest first."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        if isinstance(secrets, str):
            raise TypeError("Redactor takes an iterable of secret values, not one string: Redactor([value])")
        forms: set[str] = set()
        for secret in secrets:
            if not isinstance(secret, str):
                raise TypeError(f"a secret must be a str, got {type(secret).__name__}")
            forms.update(_forms(secret))
        self.secrets = tuple(sorted(forms, key=lambda s: (-len(s), s)))
        self._pattern = re.compile("|".join(map(re.escape, self.secrets))) if self.secrets else None
        self._single = self.secrets[0] if len(self.secrets) == 1 else None

    @classmethod
    def from_settings(
        cls,
        settings: ModelSettings | None = None,
        environ: Mapping[str, str] | None = os.environ,
        *,
        policy: EnvironmentPolicy | None = None,
        process_environ: bool | None = None,
        extra: Iterable[str] = (),
    ) -> Redactor:
        """The secrets a session knows about.

        * ``settings``: the model's ``api_key`` and the values of its ``extra_headers`` whose name
          looks secret (:func:`looks_secret_header`; also the credential after an
          ``Authorization`` scheme such as ``Bearer``);
        * ``environ`` (default ``os.environ``; ``None``: none): the values ``policy`` (default
          :class:`~actors.tools.sandbox.EnvironmentPolicy()`) withholds from tools —
          ``AWS_SECRET_ACCESS_KEY``, ``PGPASSWORD``, a ``DATABASE_URL`` with a password… — except
          values that are one plain word (``PIP_KEYRING_PROVIDER=subprocess`` is a setting);
        * ``process_environ``: also the environment the process started with
          (``/proc/self/environ``, which still holds a key popped from ``os.environ`` and which a
          command outside the sandbox can read); default: when ``environ`` is ``os.environ``;
        * ``extra``: more values (MCP bearer tokens, passwords the application holds).
        """
        values: list[str] = list(extra)
        if settings is not None:
            if settings.api_key:
                values.append(settings.api_key)
            for name, value in settings.extra_headers:
                if looks_secret_header(name):
                    values.append(value)
                    scheme, sep, credential = value.partition(" ")
                    if sep and scheme.isalpha():
                        values.append(credential.strip())
        env_policy = policy if policy is not None else EnvironmentPolicy()
        sources: list[Mapping[str, str]] = []
        if environ is not None:
            sources.append(environ)
        if process_environ if process_environ is not None else environ is os.environ:
            sources.append(_process_environ())
        for source in sources:
            values.extend(_withheld_from(source, env_policy.patterns))
        return cls(values)

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        """A redactor holding these secrets and ``secrets``."""
        added = list(secrets)
        if not added:
            return self
        return Redactor([*self.secrets, *added])

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __len__(self) -> int:
        return len(self.secrets)

    def __repr__(self) -> str:
        return f"Redactor(<{len(self.secrets)} secret spellings>)"

    # --- text ------------------------------------------------------------------------------

    def found_in(self, text: str) -> bool:
        """Whether ``text`` holds a secret."""
        single = self._single
        if single is not None:
            return single in text
        pattern = self._pattern
        return pattern is not None and pattern.search(text) is not None

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]`` (``text`` itself when it holds none)."""
        single = self._single
        if single is not None:
            return text.replace(single, REDACTED) if single in text else text
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(REDACTED, text)

    def redact_value(self, value: Any) -> Any:
        """A JSON-like value (strings, mappings, lists, tuples) with every string redacted; the same
        object when nothing changed."""
        if not self:
            return value
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            changed = False
            out: dict[Any, Any] = {}
            for k, v in value.items():
                new = self._value(v)
                key = self.redact(k) if isinstance(k, str) else k
                changed = changed or new is not v or key is not k
                out[key] = new
            return out if changed else value
        if isinstance(value, (list, tuple)):
            items = [self._value(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return tuple(items) if isinstance(value, tuple) else items
        return value

    # --- items and errors ------------------------------------------------------------------

    def redact_output(self, item: ResponseInputItem) -> ResponseInputItem:
        """A tool's output item with every secret redacted: the text of a
        ``function_call_output`` / ``custom_tool_call_output`` (or each of its content items, such
        as ``input_text``), an MCP result, a tool-search result. The same item when it holds none."""
        if not self:
            return item
        if isinstance(item, (FunctionCallOutput, CustomToolCallOutput)):
            payload = item.output
            body = payload.body
            new_body: Any = self.redact(body) if isinstance(body, str) else self._value(body)
            extra = self._value(item.extra) if item.extra else item.extra
            if new_body is body and extra is item.extra:
                return item
            return attrs.evolve(item, output=FunctionCallOutputPayload(new_body, payload.success), extra=extra)
        if isinstance(item, McpToolCallOutput):
            output = self._value(item.output)
            extra = self._value(item.extra)
            if output is item.output and extra is item.extra:
                return item
            return attrs.evolve(item, output=output, extra=extra)
        if isinstance(item, ToolSearchOutput):
            tools = self._value(tuple(item.tools))
            extra = self._value(item.extra)
            if all(a is b for a, b in zip(tools, item.tools, strict=True)) and extra is item.extra:
                return item
            return attrs.evolve(item, tools=tools, extra=extra)
        return item

    def redact_exception(self, exc: BaseException) -> None:
        """Scrub ``exc`` in place: its ``message`` (a :class:`~kernel.KernelError`,
        :class:`~kernel.RespondToModel`, :class:`~kernel.FatalToolError`) and its string ``args``;
        the members of an exception group too."""
        if not self:
            return
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                self.redact_exception(inner)
            return
        message = getattr(exc, "message", None)
        if isinstance(message, str) and self.found_in(message):
            exc.message = self.redact(message)  # type: ignore[attr-defined]
        if any(isinstance(a, str) and self.found_in(a) for a in exc.args):
            exc.args = tuple(self.redact(a) if isinstance(a, str) else a for a in exc.args)


class RedactingToolExecutor(Generic[CallT]):
    """A :class:`kernel.ToolExecutor` whose outputs, and the messages of the
    :class:`~kernel.RespondToModel` / :class:`~kernel.FatalToolError` it raises, are redacted
    before the turn records or publishes them."""

    __slots__ = ("inner", "redactor")

    def __init__(self, inner: ToolExecutor[CallT], redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    async def classify_response_item(self, item: ResponseItem) -> CompletedResponseItem[CallT]:
        """The wrapped executor's."""
        return await self.inner.classify_response_item(item)

    async def execute_tool_call(self, call: CallT) -> ResponseInputItem:
        """Run ``call`` on the wrapped executor; return its output redacted."""
        try:
            output = await self.inner.execute_tool_call(call)
        except (RespondToModel, FatalToolError) as exc:
            self.redactor.redact_exception(exc)
            raise
        return self.redactor.redact_output(output)


class RedactingClient:
    """A :class:`kernel.ModelClient` whose errors (raised when the stream opens, while it is read,
    or when it closes) have every secret redacted before they reach an event, a turn outcome or
    the rollout. Servers echo keys back (``Incorrect API key provided: <key>``) in spellings the
    HTTP layer's own redaction cannot recognise. Streamed events pass untouched (no cost per
    event). Forwards :class:`kernel.stream.FallbackTransport` to the wrapped client."""

    def __init__(self, inner: ModelClient, redactor: Redactor, *, model: str | None = None) -> None:
        self.inner = inner
        self.redactor = redactor
        self.model: str = model if model is not None else str(getattr(inner, "model", ""))

    def __repr__(self) -> str:
        return f"RedactingClient({self.inner!r})"

    def has_fallback(self) -> bool:
        """The wrapped client's (:class:`kernel.stream.FallbackTransport`); ``False`` without one."""
        return isinstance(self.inner, FallbackTransport) and self.inner.has_fallback()

    def try_switch_fallback_transport(self) -> bool:
        """Switch the wrapped client to its fallback transport, when it has one."""
        return isinstance(self.inner, FallbackTransport) and self.inner.try_switch_fallback_transport()

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[AsyncIterator[Sequence[ModelEvent]]]:
        """The wrapped client's stream. An error raised while it is read goes through this
        context manager too (it leaves the ``async with`` body), so it is redacted as well."""
        try:
            async with self.inner.stream(prompt) as batches:
                yield batches
        except (KernelError, BaseExceptionGroup) as exc:
            self.redactor.redact_exception(exc)
            raise
