"""The error table: every way a model endpoint reports a failure → the kernel error and its retry
decision, as data, in one place (PROTOCOL §3; documented in ``docs/errors.md``, generated from here).

Two entry points classify through :data:`ERROR_TABLE` and build the error, a third caps the wait:

* :func:`http_error` — a non-success HTTP response (status, headers, body); ``_http_errors``'s
  :func:`~actors.model._http_errors.error_from_http` is this function;
* :func:`stream_error` — an error object met inside a stream (``response.failed``, an ``error``
  event, a Chat Completions ``{"error": ...}`` chunk); ``_chat_errors``'s
  :func:`~actors.model._chat_errors.chat_error` and :func:`error_from_failure` (the Responses
  wire) call it;
* :func:`cap_retry_after` — the longest server-requested wait the client accepts
  (``ModelSettings.max_retry_after``): a retryable error asking for longer fails at once.

How a row is picked: the rows are tried top to bottom and the first that matches wins. A row
matches when its ``wire`` is ``"both"`` or the request's wire, its ``where`` is ``"any"`` or where
the error was met (``"http"``: an HTTP error response; ``"stream"``: an error object inside a
200 stream), its ``statuses`` (when given) contain the status (for an in-stream error: the numeric
``code`` / ``status`` local servers put in the object), and — when the row names ``codes`` or a
``message`` pattern — the error's ``code`` or ``type`` is one of the codes or its message matches.
Two rows have no condition at all, one for HTTP errors and one for in-stream errors (the last
row), so every error finds a row.

After the row: an ``x-should-retry: true|false`` response header overrides the retry decision (as
the official SDKs do; not for the two host-hook errors, which the loop never retries), then
:func:`cap_retry_after` refuses a wait longer than the cap.

Each row carries ``samples``: error bodies of OpenAI and of the local servers (vLLM, llama.cpp,
Ollama, LM Studio) as they send them, each naming where it was taken from (the few whose wording
is illustrative say so). ``docs/errors.md`` lists them
and ``tests/actors/test_error_table.py`` serves every sample from the scripted server, on both
wires, and checks the class and the number of attempts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import attrs
import msgspec

from kernel.errors import (
    ContextWindowExceeded,
    InvalidRequest,
    KernelError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    StreamError,
    Unauthorized,
    UsageLimitReached,
    UsageNotIncluded,
)

from ._http_errors import (
    _Body,
    _header,
    _lower_headers,
    _number,
    _status_text,
    clean_message,
    rate_limits_from_headers,
    requested_delay,
)

__all__ = [
    "ErrorRow",
    "ErrorFacts",
    "Sample",
    "ERROR_TABLE",
    "SDK_RESPONSE_ERROR_CODES",
    "classify",
    "http_facts",
    "stream_facts",
    "http_error",
    "stream_error",
    "error_from_failure",
    "cap_retry_after",
    "errors_markdown",
]

Wire = Literal["responses", "chat"]
RowWire = Literal["responses", "chat", "both"]
Where = Literal["http", "stream", "any"]


# ---------------------------------------------------------------------------------------------
# the row type
# ---------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Sample:
    """One real error as a server sends it (used by the docs and the end-to-end test).

    An HTTP sample has a ``status`` and a ``body`` (a JSON object, or text sent as it is) and
    optional response ``headers``; an in-stream sample has no status, and ``code`` / ``message``
    (sent as ``response.failed`` on the Responses wire, as a ``{"error": ...}`` chunk on Chat
    Completions). ``source`` says where the body was taken from."""

    dialect: str
    source: str
    status: int | None = None
    body: Mapping[str, Any] | str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    code: str = ""
    message: str = ""

    @property
    def in_stream(self) -> bool:
        """Whether this error is met inside a stream (no HTTP status)."""
        return self.status is None


@attrs.frozen(kw_only=True)
class ErrorRow:
    """One rule of the table (see the module docstring for how rows match).

    ``error`` is the kernel error class; ``retryable`` the loop's decision (always the class's
    own); ``honours_delay``: a retry waits at least the delay the server named (``Retry-After``,
    ``retry-after-ms`` or "try again in 1.5s" for HTTP errors, the message for in-stream ones).
    ``lead`` is put before the message and ``hint`` after it, in parentheses."""

    name: str
    where: Where
    error: type[KernelError]
    retryable: bool
    honours_delay: bool = False
    statuses: tuple[tuple[int, int], ...] = ()
    codes: frozenset[str] = frozenset()
    message: re.Pattern[str] | None = None
    wire: RowWire = "both"
    lead: str = ""
    hint: str = ""
    why: str = ""
    samples: tuple[Sample, ...] = ()

    def matches(self, facts: ErrorFacts, wire: str | None) -> bool:
        """Whether this row applies to ``facts`` on ``wire`` (``None``: unknown, so only rows
        for both wires apply)."""
        if self.wire != "both" and self.wire != wire:
            return False
        if self.where != "any" and self.where != facts.where:
            return False
        if self.statuses:
            status = facts.status
            if status is None or not any(lo <= status <= hi for lo, hi in self.statuses):
                return False
        if self.codes or self.message is not None:
            if self.codes & facts.keys:
                return True
            return (
                self.message is not None
                and facts.message is not None
                and self.message.search(facts.message) is not None
            )
        return True


@attrs.frozen(kw_only=True)
class ErrorFacts:
    """What an error says, as the table reads it: where it was met, its status (for in-stream
    errors, a numeric code or status in the object), its ``code`` and ``type`` (lower case, not
    numbers), its message (redacted, bounded), the error object and the response headers."""

    where: Literal["http", "stream"]
    status: int | None
    keys: frozenset[str]
    message: str | None
    error: Mapping[str, Any] = attrs.field(factory=dict)
    headers: Mapping[str, str] | None = None


def _r(lo: int, hi: int | None = None) -> tuple[int, int]:
    return (lo, lo if hi is None else hi)


def _codes(*names: str) -> frozenset[str]:
    return frozenset(names)


# ---------------------------------------------------------------------------------------------
# message patterns (local servers that only say it in words)
# ---------------------------------------------------------------------------------------------

CONTEXT_WORDS: Final = re.compile(
    r"maximum context length"  # OpenAI (older), vLLM
    r"|context[ _]length[ _]exceeded|context[ _]window[ _]exceeded"
    r"|exceeds? (?:the )?(?:available |model'?s? (?:maximum )?)?context (?:size|length|window)"  # llama.cpp, Ollama, OpenAI
    r"|(?:larger|longer|greater) than the (?:max(?:imum)? )?(?:context|model) (?:size|length)"  # llama.cpp, Ollama, vLLM, LM Studio
    r"|context length is only"  # vLLM ("the model's context length is only N tokens")
    r"|does not fit (?:in|into) (?:the )?context"  # LM Studio
    r"|context size has been exceeded"  # LM Studio (MLX engine)
    r"|context the overflows"  # LM Studio ("Trying to keep the first N tokens when context the overflows")
    r"|n_keep\b[^\n]{0,40}>=\s*n_ctx",  # LM Studio / llama.cpp ("n_keep (N) >= n_ctx (M)")
    re.IGNORECASE,
)
"""A context overflow said in words: used for HTTP 400/413/422 and in-stream errors only."""

UNKNOWN_ROUTE: Final = re.compile(
    r"^\s*(?:not found|file not found|404 page not found)\s*$|unexpected endpoint or method", re.IGNORECASE
)
"""The body of a 404 for a path the server does not serve (FastAPI, llama.cpp, Ollama's gin)."""

# ---------------------------------------------------------------------------------------------
# sources (where each sample body was taken from)
# ---------------------------------------------------------------------------------------------

_SRC_PROTOCOL = "PROTOCOL §3 / codex-rs (OpenAI Responses API)"
_SRC_OPENAI_DOCS = "OpenAI API error codes guide (platform.openai.com/docs/guides/error-codes)"
_SRC_SDK = "openai-python 3.63 openai/types/responses/response_error.py (ResponseError.code)"
_SRC_CODEX = (
    "codex-rs backend (usage_limit_reached / usage_not_included bodies; actors.scripted HttpError.usage_limit_reached)"
)
_SRC_VLLM_PROTOCOL = "vllm-project/vllm vllm/entrypoints/openai/engine/protocol.py (ErrorResponse{error: ErrorInfo{message, type, param, code: int}})"
_SRC_VLLM_LEGACY = "vllm-project/vllm <= 0.9 protocol.py (ErrorResponse{object: 'error', message, type, param, code})"
_SRC_VLLM_CTX = "vLLM 0.10+ body quoted in public client tests (Mythosia.AI ContextLengthErrorTranslationTests; find_string 'Please reduce the length of the input prompt')"
_SRC_VLLM_NOTFOUND = (
    "vllm-project/vllm serving_engine.py _check_model ('The model `{model}` does not exist.', NotFoundError, 404)"
)
_SRC_LLAMA_ERR = (
    "ggml-org/llama.cpp tools/server/utils.hpp format_error_response + server_task_result_error::to_json "
    "(exceed_context_size_error, n_prompt_tokens, n_ctx)"
)
_SRC_LLAMA_CTX = "ggml-org/llama.cpp tools/server/server-context.cpp ('request (%d tokens) exceeds the available context size (%d tokens), try increasing it')"
_SRC_LLAMA_404 = (
    'ggml-org/llama.cpp server set_error_handler: format_error_response("File Not Found", ERROR_TYPE_NOT_FOUND)'
)
_SRC_LLAMA_503 = (
    'ggml-org/llama.cpp server middleware_server_state: format_error_response("Loading model", ERROR_TYPE_UNAVAILABLE)'
)
_SRC_OLLAMA_OPENAI = (
    "ollama/ollama openai/openai.go NewError (type invalid_request_error / not_found_error / api_error)"
)
_SRC_OLLAMA_CTX = "ollama/ollama llm/llama_server.go (StatusBadRequest: 'the prompt is longer than the context length currently available to the model; ...')"
_SRC_OLLAMA_EMBED = "ollama/ollama llm/llama_server.go normalizeEmbeddingError ('the input length exceeds the context length', native {\"error\": ...} body)"
_SRC_OLLAMA_BUSY = "ollama/ollama server/sched.go ErrMaxQueue, server/routes.go (503)"
_SRC_OLLAMA_404 = (
    "ollama/ollama server/routes.go ('model %q not found, try pulling it first', 404); gin's '404 page not found'"
)
_SRC_LMSTUDIO_400 = "LM Studio 400 body quoted in Gitlawb/openclaude issue #353"
_SRC_LMSTUDIO_STREAM = "LM Studio 0.4.21 `event: error` on a 200 stream, quoted in aaif-goose/goose issue #11318 (lmstudio-bug-tracker #2322)"
_SRC_LMSTUDIO_KEEP = "LM Studio server log quoted in lmstudio-bug-tracker issues #546 and #237"
_SRC_FASTAPI_404 = "FastAPI/Starlette default 404 body (vLLM and other Python servers)"

_RATE_MESSAGE = (
    "Rate limit reached for gpt-4o in organization org-scripted on tokens per min (TPM): Limit 30000, "
    "Used 28000, Requested 3796. Please try again in 1.898s."
)


def _openai(status: int, message: str, type_: str | None, code: str | None, **headers: str) -> Sample:
    return Sample(
        dialect="OpenAI",
        source=_SRC_OPENAI_DOCS,
        status=status,
        body={"error": {"message": message, "type": type_, "param": None, "code": code}},
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


def _in_stream(code: str, message: str, *, dialect: str = "OpenAI Responses", source: str = _SRC_SDK) -> Sample:
    return Sample(dialect=dialect, source=source, code=code, message=message)


# ---------------------------------------------------------------------------------------------
# in-stream codes of the Responses API (ResponseError.code in the official SDK)
# ---------------------------------------------------------------------------------------------

SDK_RESPONSE_ERROR_CODES: Final = (
    "server_error",
    "rate_limit_exceeded",
    "invalid_prompt",
    "data_residency_mismatch",
    "bio_policy",
    "misalignment_policy_violation",
    "vector_store_timeout",
    "invalid_image",
    "invalid_image_format",
    "invalid_base64_image",
    "invalid_image_url",
    "image_too_large",
    "image_too_small",
    "image_parse_error",
    "image_content_policy_violation",
    "invalid_image_mode",
    "image_file_too_large",
    "unsupported_image_media_type",
    "empty_image_file",
    "failed_to_download_image",
    "image_file_not_found",
)
"""Every value of ``ResponseError.code`` in the official SDK (a test checks this list against it);
each one is classified by an explicit row below."""

_REQUEST_CODES: Final = ("invalid_prompt", "data_residency_mismatch")
_POLICY_CODES: Final = ("bio_policy", "misalignment_policy_violation", "image_content_policy_violation")
_IMAGE_CODES: Final = (
    "invalid_image",
    "invalid_image_format",
    "invalid_base64_image",
    "invalid_image_url",
    "image_too_large",
    "image_too_small",
    "image_parse_error",
    "invalid_image_mode",
    "image_file_too_large",
    "unsupported_image_media_type",
    "empty_image_file",
    "image_file_not_found",
)
_TRANSIENT_CODES: Final = (
    "server_error",
    "vector_store_timeout",
    "failed_to_download_image",
    "server_is_overloaded",  # codex backend
    "slow_down",  # codex backend
)


def _code_samples(codes: tuple[str, ...], wording: str) -> tuple[Sample, ...]:
    source = f"{_SRC_SDK}; codex-rs for server_is_overloaded / slow_down; message wording illustrative"
    return tuple(_in_stream(code, f"{wording} ({code}).", source=source) for code in codes)


# ---------------------------------------------------------------------------------------------
# THE TABLE
# ---------------------------------------------------------------------------------------------

ERROR_TABLE: Final[tuple[ErrorRow, ...]] = (
    # ---- the code says it: any status, HTTP or in-stream ------------------------------------
    ErrorRow(
        name="context_length_exceeded",
        where="any",
        codes=_codes("context_length_exceeded"),
        error=ContextWindowExceeded,
        retryable=False,
        why="the prompt does not fit: the host compacts history (handle_context_window_exceeded)",
        samples=(
            _openai(
                400,
                "Your input exceeds the context window of this model. Please adjust your input and try again.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            _in_stream(
                "context_length_exceeded",
                "Your input exceeds the context window of this model. Please adjust your input and try again.",
                source=_SRC_PROTOCOL,
            ),
        ),
    ),
    ErrorRow(
        name="llama.cpp exceed_context_size_error",
        where="any",
        codes=_codes("exceed_context_size_error"),
        error=ContextWindowExceeded,
        retryable=False,
        why="llama.cpp's type for a prompt larger than the slot's context",
        samples=(
            Sample(
                dialect="llama.cpp",
                source=_SRC_LLAMA_ERR,
                status=400,
                body={
                    "error": {
                        "code": 400,
                        "message": "request (5120 tokens) exceeds the available context size (4096 tokens), try increasing it",
                        "type": "exceed_context_size_error",
                        "n_prompt_tokens": 5120,
                        "n_ctx": 4096,
                    }
                },
            ),
        ),
    ),
    ErrorRow(
        name="usage_limit_reached",
        where="any",
        codes=_codes("usage_limit_reached"),
        error=UsageLimitReached,
        retryable=False,
        why="the plan's limit: the host hook gets the rate-limit snapshot, plan and resets_at",
        samples=(
            Sample(
                dialect="codex backend",
                source=_SRC_CODEX,
                status=429,
                body={
                    "error": {
                        "type": "usage_limit_reached",
                        "message": "The usage limit has been reached",
                        "plan_type": "plus",
                        "resets_at": 1760000000,
                    }
                },
            ),
            _in_stream(
                "usage_limit_reached", "The usage limit has been reached", dialect="codex backend", source=_SRC_CODEX
            ),
        ),
    ),
    ErrorRow(
        name="usage_not_included",
        where="any",
        codes=_codes("usage_not_included"),
        error=UsageNotIncluded,
        retryable=False,
        why="the plan does not include this model: retrying cannot help",
        samples=(
            Sample(
                dialect="codex backend",
                source=_SRC_CODEX,
                status=429,
                body={"error": {"type": "usage_not_included", "message": "This model is not included in your plan."}},
            ),
            _in_stream(
                "usage_not_included",
                "This model is not included in your plan.",
                dialect="codex backend",
                source=_SRC_CODEX,
            ),
        ),
    ),
    ErrorRow(
        name="insufficient_quota",
        where="any",
        codes=_codes("insufficient_quota"),
        error=QuotaExceeded,
        retryable=False,
        why="no quota left (billing): recognised under any status and in-stream, never retried",
        samples=(
            _openai(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            ),
            Sample(
                dialect="(any status)",
                source="illustrative: OpenAI's insufficient_quota body under another status (a gateway's)",
                status=403,
                body={
                    "error": {
                        "message": "You exceeded your current quota.",
                        "type": "insufficient_quota",
                        "code": "insufficient_quota",
                    }
                },
            ),
            _in_stream(
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
                source=_SRC_PROTOCOL,
            ),
        ),
    ),
    ErrorRow(
        name="rate_limit_exceeded",
        where="any",
        codes=_codes("rate_limit_exceeded"),
        error=RateLimited,
        retryable=True,
        honours_delay=True,
        why="a rate limit, in-stream as over HTTP: wait the named delay",
        samples=(
            _openai(429, _RATE_MESSAGE, "tokens", "rate_limit_exceeded"),
            _openai(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded", retry_after="2"),
            _in_stream("rate_limit_exceeded", _RATE_MESSAGE),
        ),
    ),
    # ---- a context overflow said in words (local servers) ---------------------------------
    ErrorRow(
        name="context overflow in words (HTTP)",
        where="http",
        statuses=(_r(400), _r(413), _r(422)),
        message=CONTEXT_WORDS,
        error=ContextWindowExceeded,
        retryable=False,
        why="vLLM, Ollama and LM Studio name no code: the message says it; compaction must trigger",
        samples=(
            Sample(
                dialect="vLLM",
                source=_SRC_VLLM_CTX + "; " + _SRC_VLLM_PROTOCOL,
                status=400,
                body={
                    "error": {
                        "message": "This model's maximum context length is 50000 tokens. However, you requested 0 "
                        "output tokens and your prompt contains at least 50001 input tokens, for a total of at least "
                        "50001 tokens. Please reduce the length of the input prompt or the number of requested output "
                        "tokens. (parameter=input_tokens, value=50001)",
                        "type": "BadRequestError",
                        "param": "input_tokens",
                        "code": 400,
                    }
                },
            ),
            Sample(
                dialect="vLLM (legacy body)",
                source=_SRC_VLLM_LEGACY,
                status=400,
                body={
                    "object": "error",
                    "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 "
                    "tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages "
                    "or completion.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
            ),
            Sample(
                dialect="Ollama",
                source=_SRC_OLLAMA_CTX + "; " + _SRC_OLLAMA_OPENAI,
                status=400,
                body={
                    "error": {
                        "message": "the prompt is longer than the context length currently available to the model; "
                        "shorten the prompt, adjust the context length in settings, or use a model with a longer "
                        "context length",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
            Sample(
                dialect="Ollama (native body)",
                source=_SRC_OLLAMA_EMBED,
                status=400,
                body={"error": "the input length exceeds the context length"},
            ),
            Sample(
                dialect="LM Studio",
                source=_SRC_LMSTUDIO_400,
                status=400,
                body={
                    "error": "The number of tokens to keep from the initial prompt is greater than the context length "
                    "(n_keep: 13055>= n_ctx: 4096). Try to load the model with a larger context length, or provide a "
                    "shorter input."
                },
            ),
        ),
    ),
    ErrorRow(
        name="context overflow in words (in-stream)",
        where="stream",
        message=CONTEXT_WORDS,
        error=ContextWindowExceeded,
        retryable=False,
        why="LM Studio reports an overflow inside a 200 stream, in words only",
        samples=(
            _in_stream(
                "",
                "Input does not fit in context length. The input has 31430 tokens, but the context length only "
                "supports 30000 tokens.",
                dialect="LM Studio",
                source=_SRC_LMSTUDIO_STREAM,
            ),
            _in_stream(
                "",
                "Trying to keep the first 10136 tokens when context the overflows. However, the model is loaded with "
                "context length of only 7866 tokens, which is not enough. Try to load the model with a larger context "
                "length, or provide a shorter input.",
                dialect="LM Studio",
                source=_SRC_LMSTUDIO_KEEP,
            ),
        ),
    ),
    # ---- in-stream codes of the Responses API (the SDK's ResponseError.code) ---------------
    ErrorRow(
        name="in-stream: invalid request",
        where="stream",
        codes=_codes(*_REQUEST_CODES),
        error=InvalidRequest,
        retryable=False,
        why="the request itself is refused: the same request fails again",
        samples=_code_samples(_REQUEST_CODES, "The request was rejected"),
    ),
    ErrorRow(
        name="in-stream: policy",
        where="stream",
        codes=_codes(*_POLICY_CODES),
        error=InvalidRequest,
        retryable=False,
        why="a content policy refused the request: permanent",
        samples=_code_samples(_POLICY_CODES, "The request was blocked by a usage policy"),
    ),
    ErrorRow(
        name="in-stream: image",
        where="stream",
        codes=_codes(*_IMAGE_CODES),
        error=InvalidRequest,
        retryable=False,
        why="an input image is invalid, too large or missing: permanent",
        samples=_code_samples(_IMAGE_CODES, "The image input could not be used"),
    ),
    # ---- by status (HTTP; in-stream errors whose object carries a numeric code too) ---------
    ErrorRow(
        name="429",
        where="any",
        statuses=(_r(429),),
        error=RateLimited,
        retryable=True,
        honours_delay=True,
        why="rate limited: wait Retry-After / retry-after-ms / the delay in the message",
        samples=(
            Sample(
                dialect="Ollama (cloud models)",
                source=_SRC_OLLAMA_OPENAI + " (api_error for a status other than 400/404); wording illustrative",
                status=429,
                body={"error": {"message": "too many requests", "type": "api_error", "param": None, "code": None}},
                headers={"retry-after": "1"},
            ),
            Sample(dialect="proxy", source="RFC 6585 §4", status=429, body="Too Many Requests"),
        ),
    ),
    ErrorRow(
        name="401 / 403",
        where="any",
        statuses=(_r(401), _r(403)),
        error=Unauthorized,
        retryable=False,
        why="credentials refused: a host may refresh them first",
        samples=(
            _openai(401, "Incorrect API key provided: sk-abc***xyz.", "invalid_request_error", "invalid_api_key"),
            Sample(
                dialect="llama.cpp",
                source=_SRC_LLAMA_ERR,
                status=401,
                body={"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}},
            ),
        ),
    ),
    ErrorRow(
        name="404 unknown route (Responses wire)",
        where="http",
        wire="responses",
        statuses=(_r(404),),
        message=UNKNOWN_ROUTE,
        error=InvalidRequest,
        retryable=False,
        hint="no Responses API at this URL: local servers often speak only Chat Completions, so try "
        "ModelSettings(wire='chat'), and check that base_url ends in /v1",
        why="the server has no /responses route: say how to fix it",
        samples=(
            Sample(dialect="vLLM", source=_SRC_FASTAPI_404, status=404, body={"detail": "Not Found"}),
            Sample(
                dialect="llama.cpp",
                source=_SRC_LLAMA_404,
                status=404,
                body={"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}},
            ),
            Sample(dialect="Ollama", source=_SRC_OLLAMA_404, status=404, body="404 page not found"),
        ),
    ),
    ErrorRow(
        name="408 / 409",
        where="any",
        statuses=(_r(408), _r(409)),
        error=StreamError,
        retryable=True,
        honours_delay=True,
        why="request timeout / conflict are transient (the SDKs retry them)",
        samples=(Sample(dialect="proxy", source="RFC 9110 §15.5.9", status=408, body="Request Timeout"),),
    ),
    ErrorRow(
        name="501",
        where="any",
        statuses=(_r(501),),
        error=InvalidRequest,
        retryable=False,
        why="not implemented (llama.cpp's not_supported_error): the same request fails again",
        samples=(
            Sample(
                dialect="llama.cpp",
                source=_SRC_LLAMA_ERR
                + "; 501 body quoted in public probes (find_string 'This server does not support embeddings')",
                status=501,
                body={
                    "error": {
                        "code": 501,
                        "message": "This server does not support embeddings. Start it with `--embeddings`",
                        "type": "not_supported_error",
                    }
                },
            ),
        ),
    ),
    ErrorRow(
        name="5xx",
        where="any",
        statuses=(_r(500, 599),),
        error=ServerError,
        retryable=True,
        honours_delay=True,
        why="the server failed or is overloaded: retry, never sooner than it asked",
        samples=(
            _openai(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
            _openai(
                503,
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
                retry_after="3",
            ),
            Sample(
                dialect="Ollama",
                source=_SRC_OLLAMA_BUSY + "; " + _SRC_OLLAMA_OPENAI,
                status=503,
                body={
                    "error": {
                        "message": "server busy, please try again.  maximum pending requests exceeded",
                        "type": "api_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
            Sample(
                dialect="llama.cpp",
                source=_SRC_LLAMA_503,
                status=503,
                body={"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
            ),
            Sample(
                dialect="proxy", source="nginx", status=502, body="<html><body><h1>502 Bad Gateway</h1></body></html>"
            ),
        ),
    ),
    ErrorRow(
        name="other 4xx",
        where="any",
        statuses=(_r(400, 499),),
        error=InvalidRequest,
        retryable=False,
        why="the endpoint rejected the request: the message from the body says why",
        samples=(
            _openai(400, "Unsupported parameter: 'foo'.", "invalid_request_error", "unsupported_parameter"),
            _openai(
                404,
                "The model `gpt-x` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            ),
            Sample(
                dialect="vLLM",
                source=_SRC_VLLM_PROTOCOL + "; vllm/sampling_params.py (VLLMValidationError)",
                status=400,
                body={
                    "error": {
                        "message": "temperature must be non-negative, got -1.0.",
                        "type": "BadRequestError",
                        "param": "temperature",
                        "code": 400,
                    }
                },
            ),
            Sample(
                dialect="vLLM",
                source=_SRC_VLLM_NOTFOUND,
                status=404,
                body={
                    "error": {
                        "message": "The model `gpt-x` does not exist.",
                        "type": "NotFoundError",
                        "param": None,
                        "code": 404,
                    }
                },
            ),
            Sample(
                dialect="llama.cpp",
                source=_SRC_LLAMA_ERR + "; tools/server/utils.hpp oaicompat_chat_params_parse",
                status=400,
                body={"error": {"code": 400, "message": "'messages' is required", "type": "invalid_request_error"}},
            ),
            Sample(
                dialect="Ollama",
                source=_SRC_OLLAMA_404 + "; " + _SRC_OLLAMA_OPENAI,
                status=404,
                body={
                    "error": {
                        "message": 'model "gpt-x" not found, try pulling it first',
                        "type": "not_found_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
            Sample(
                dialect="LM Studio",
                source="LM Studio 404 body quoted in canopyai/Orpheus-TTS issue #229 (and lmstudio-ai/lms issue #107)",
                status=404,
                body={
                    "error": {
                        "message": "No models loaded. Please load a model in the developer page or use the `lms load` command.",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                },
            ),
        ),
    ),
    ErrorRow(
        name="unexpected HTTP status",
        where="http",
        error=InvalidRequest,
        retryable=False,
        lead="unexpected HTTP status ",
        why="not an error status the API uses (1xx-3xx, 6xx)",
        samples=(Sample(dialect="proxy", source="a redirect the client does not follow", status=302, body="moved"),),
    ),
    # ---- in-stream codes that say "try again" -------------------------------------------
    ErrorRow(
        name="in-stream: transient",
        where="stream",
        codes=_codes(*_TRANSIENT_CODES),
        error=StreamError,
        retryable=True,
        honours_delay=True,
        why="the server failed or is overloaded (an image URL may download next time): retry",
        samples=_code_samples(_TRANSIENT_CODES, "The server could not finish the response"),
    ),
    ErrorRow(
        name="in-stream otherwise",
        where="stream",
        error=StreamError,
        retryable=True,
        honours_delay=True,
        why="an unknown in-stream failure is a broken stream (the seed retries it)",
        samples=(
            _in_stream("some_new_code", "Something went wrong. Please try again in 250ms.", source=_SRC_PROTOCOL),
        ),
    ),
)
"""The rows, tried top to bottom; the first match wins."""


def classify(facts: ErrorFacts, wire: str | None = None) -> ErrorRow:
    """The first row of :data:`ERROR_TABLE` that matches ``facts`` on ``wire``."""
    for row in ERROR_TABLE:
        if row.matches(facts, wire):
            return row
    raise AssertionError("the error table ends with catch-all rows")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# building the error
# ---------------------------------------------------------------------------------------------


def _keys(*values: Any) -> frozenset[str]:
    """``code`` / ``type`` values as lower-case strings; numbers (HTTP statuses local servers put
    in ``code``) and the event type ``"error"`` are not codes."""
    out: set[str] = set()
    for value in values:
        if isinstance(value, str):
            key = value.strip().lower()
            if key and not key.isdigit() and key != "error":
                out.add(key)
    return frozenset(out)


def _status_of(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _usage_limit(facts: ErrorFacts, detail: str) -> UsageLimitReached:
    err = facts.error
    plan = err.get("plan_type")
    resets_at = _number(err.get("resets_at"))
    if resets_at is None:
        resets_in = _number(err.get("resets_in_seconds"))
        if resets_in is not None:
            resets_at = time.time() + resets_in
    return UsageLimitReached(
        detail if facts.message else "",
        rate_limits_from_headers(facts.headers),
        plan_type=plan if isinstance(plan, str) else None,
        resets_at=resets_at,
    )


_Builder = Callable[[ErrorFacts, str, float | None], KernelError]

_BUILDERS: Final[dict[type[KernelError], _Builder]] = {
    ContextWindowExceeded: lambda f, detail, delay: ContextWindowExceeded(f.message or ""),
    QuotaExceeded: lambda f, detail, delay: QuotaExceeded(f.message or ""),
    UsageNotIncluded: lambda f, detail, delay: UsageNotIncluded(f.message or ""),
    UsageLimitReached: lambda f, detail, delay: _usage_limit(f, detail),
    InvalidRequest: lambda f, detail, delay: InvalidRequest(detail, status=400 if f.status is None else f.status),
    Unauthorized: lambda f, detail, delay: Unauthorized(detail, status=401 if f.status is None else f.status),
    RateLimited: lambda f, detail, delay: RateLimited(detail, retry_after=delay),
    ServerError: lambda f, detail, delay: ServerError(
        detail, status=500 if f.status is None else f.status, retry_after=delay
    ),
    StreamError: lambda f, detail, delay: StreamError(detail, delay),
}
"""How each class of the table is built: the host-facing classes keep the server's own words (or
their default text); the others get the full detail (status line or prefix, message, hint)."""


def _secs(value: float) -> str:
    return f"{value:g}s"


def cap_retry_after(err: KernelError, max_retry_after: float | None) -> KernelError:
    """``err``, made non-retryable when it asks for a wait longer than ``max_retry_after`` seconds
    (``ModelSettings.max_retry_after``; ``None``: no cap).

    A retry never comes sooner than the server asked, so a wait above the cap is not slept: the
    error fails at once and its message names the requested wait and the cap. Changes ``err`` in
    place (see :meth:`~kernel.errors.KernelError.override_retry`) and returns it. Never raises.
    """
    delay = err.retry_after
    if max_retry_after is None or not err.retryable or delay is None or delay <= max_retry_after:
        return err
    err.override_retry(
        False,
        f"the server asked to wait {_secs(delay)} before retrying, longer than max_retry_after "
        f"({_secs(max_retry_after)}): not retried",
    )
    return err


_HOOK_ERRORS: Final = (ContextWindowExceeded, UsageLimitReached)


def _obey_should_retry(err: KernelError, headers: Mapping[str, str] | None, message: str | None) -> None:
    """``x-should-retry: true|false`` (OpenAI's header; the official SDKs obey it first)."""
    if not headers or isinstance(err, _HOOK_ERRORS):
        return
    flag = (_header(_lower_headers(headers), "x-should-retry") or "").lower()
    if flag == "false" and err.retryable:
        err.override_retry(False, "the server said not to retry: x-should-retry: false")
    elif flag == "true" and not err.retryable:
        err.override_retry(
            True, "retried: the server sent x-should-retry: true", retry_after=requested_delay(headers, message)
        )


def http_error(
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes,
    *,
    wire: str | None = None,
    max_retry_after: float | None = None,
) -> KernelError:
    """The kernel error for a non-success HTTP response of the model endpoint (see
    :data:`ERROR_TABLE`; ``docs/errors.md``).

    ``wire`` (``"responses"`` / ``"chat"``; ``None``: unknown) selects the wire-specific rows;
    ``max_retry_after`` caps a requested wait (:func:`cap_retry_after`). The message is
    ``"<status> <phrase>: <body message>"``, built from the body only (never from request
    headers), with secrets redacted and long text truncated. Never raises.
    """
    facts = http_facts(status, headers, body)
    row = classify(facts, wire)
    head = _status_text(facts.status or 0)
    base = f"{head}: {facts.message}" if facts.message else head
    detail = row.lead + base + (f" ({row.hint})" if row.hint else "")
    delay = requested_delay(headers, facts.message) if row.honours_delay else None
    err = _BUILDERS[row.error](facts, detail, delay)
    _obey_should_retry(err, headers, facts.message)
    return cap_retry_after(err, max_retry_after)


def http_facts(status: int, headers: Mapping[str, str] | None, body: bytes) -> ErrorFacts:
    """What an HTTP error response says (its body parsed as OpenAI-style JSON, a ``detail`` or
    top-level ``message``, or text). Never raises."""
    try:
        status = int(status)
    except (TypeError, ValueError):
        status = 0
    info = _Body(bytes(body or b""))
    return ErrorFacts(
        where="http",
        status=status,
        keys=_keys(info.code, info.type),
        message=info.message,
        error=info.error,
        headers=headers,
    )


_ENCODER: Final = msgspec.json.Encoder()


def _json_text(value: Any) -> str:
    try:
        return _ENCODER.encode(value).decode("utf-8")
    except (TypeError, ValueError, OverflowError):
        return repr(value)


def stream_error(
    error: Any,
    *,
    wire: str | None,
    default_message: str | None = None,
    prefix: str = "",
    status: int | None = None,
    max_retry_after: float | None = None,
) -> KernelError:
    """The kernel error for an error object met inside a stream (``{"message", "type", "code"}``,
    or a bare string; see :data:`ERROR_TABLE`).

    A numeric ``code`` or ``status`` in the object (vLLM and llama.cpp put the HTTP status there)
    is matched like an HTTP status; an explicit ``status`` (an error object from an HTTP body)
    makes the error count as an HTTP one. The message is ``prefix`` + the object's message (or
    ``default_message``, or the object as JSON when that is ``None``); a delay named in it ("try
    again in 1.5s") is honoured on retryable rows, up to ``max_retry_after``. Never raises.
    """
    facts = stream_facts(error, status=status)
    message = facts.message
    row = classify(facts, wire)
    if message is None:
        message = clean_message(default_message if default_message is not None else _json_text(error))
    detail = row.lead + prefix + message + (f" ({row.hint})" if row.hint else "")
    delay = requested_delay(None, facts.message) if row.honours_delay else None
    err = _BUILDERS[row.error](facts, detail, delay)
    return cap_retry_after(err, max_retry_after)


def stream_facts(error: Any, *, status: int | None = None) -> ErrorFacts:
    """What an error object met in a stream says (see :func:`stream_error` for ``status``).
    Never raises."""
    obj: Mapping[str, Any] = {}
    code: Any = None
    kind: Any = None
    raw: str | None = None
    if isinstance(error, Mapping):
        obj = error
        message = error.get("message")
        raw = message if isinstance(message, str) and message.strip() else None
        code, kind = error.get("code"), error.get("type")
    elif isinstance(error, str):
        raw = error if error.strip() else None
    where: Literal["http", "stream"] = "stream" if status is None else "http"
    if status is None:
        status = _status_of(code)
        if status is None:
            status = _status_of(obj.get("status"))
    message = clean_message(raw) if raw is not None else None
    return ErrorFacts(where=where, status=status, keys=_keys(code, kind), message=message, error=obj)


def error_from_failure(error: Any, default_message: str, *, max_retry_after: float | None = None) -> KernelError:
    """The kernel error for the ``error`` object of ``response.failed`` (or an ``error`` event) on
    the Responses wire, classified by :data:`ERROR_TABLE`.

    By ``code`` (or ``type``): ``context_length_exceeded`` → :class:`ContextWindowExceeded`,
    ``insufficient_quota`` → :class:`QuotaExceeded`, ``usage_not_included`` →
    :class:`UsageNotIncluded`, ``usage_limit_reached`` → :class:`UsageLimitReached` (``plan_type``,
    ``resets_at``), ``rate_limit_exceeded`` → a retryable :class:`RateLimited`, the permanent codes
    of the SDK's ``ResponseError.code`` (``invalid_prompt``, the image and policy codes…) →
    :class:`InvalidRequest`; a context overflow said only in words → :class:`ContextWindowExceeded`;
    anything else → a retryable :class:`StreamError`. A retryable error's ``retry_after`` is the
    delay named in the message ("try again in 1.898s"), if any. The message is the server's (or
    ``default_message``, naming the code when there is one). Never raises.
    """
    err: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
    code = err.get("code")
    default = f"{default_message} ({code})" if isinstance(code, str) and code.strip() else default_message
    return stream_error(err, wire="responses", default_message=default, max_retry_after=max_retry_after)


# ---------------------------------------------------------------------------------------------
# docs/errors.md
# ---------------------------------------------------------------------------------------------


def _status_cell(row: ErrorRow) -> str:
    if row.statuses:
        parts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in row.statuses]
        return " / ".join(parts)
    return "—" if row.where == "stream" else "any"


def _match_cell(row: ErrorRow) -> str:
    parts: list[str] = []
    if row.codes:
        parts.append("code/type " + ", ".join(f"`{c}`" for c in sorted(row.codes)))
    if row.message is CONTEXT_WORDS:
        parts.append("message says the context overflowed")
    elif row.message is UNKNOWN_ROUTE:
        parts.append("message says the route is unknown")
    elif row.message is not None:
        parts.append(f"message matches `{row.message.pattern}`")
    return " or ".join(parts) if parts else "anything"


def _delay_cell(row: ErrorRow) -> str:
    if not row.honours_delay:
        return "—"
    if row.where == "stream":
        return "message"
    return "Retry-After, retry-after-ms, message" + (" (in-stream: message)" if row.where == "any" else "")


def _where_cell(row: ErrorRow) -> str:
    return {"http": "HTTP", "stream": "in-stream", "any": "HTTP or in-stream"}[row.where]


def _sample_text(sample: Sample) -> str:
    if sample.in_stream:
        return f"in-stream `{_json_text({'code': sample.code, 'message': sample.message})}`"
    body = sample.body if isinstance(sample.body, str) else _json_text(sample.body)
    headers = "".join(f" + `{k}: {v}`" for k, v in sample.headers.items())
    return f"HTTP {sample.status}{headers} `{body}`"


def errors_markdown() -> str:
    """``docs/errors.md``: the table as Markdown (a test checks the file matches; regenerate with
    ``python -m actors.model._error_table > docs/errors.md``)."""
    out = [
        "# Errors: what the kernel does with each failure",
        "",
        "<!-- Generated from actors/model/_error_table.py (ERROR_TABLE): `python -m actors.model._error_table > "
        "docs/errors.md`. tests/actors/test_error_table.py checks this file matches the table. -->",
        "",
        "Every HTTP error response and every error met inside a stream is classified by one table "
        "(`actors/model/_error_table.py`), on both wires (`responses`: `POST /v1/responses`; `chat`: "
        "`POST /v1/chat/completions`). Rows are tried top to bottom; the first that matches wins. "
        "*Where*: an HTTP error response, or an error object inside a 200 stream (`response.failed`, an "
        '`error` event, a Chat Completions `{"error": ...}` chunk). *Status*: the HTTP status; for an '
        "in-stream error, a numeric `code`/`status` in the object (vLLM and llama.cpp put the HTTP status "
        "there). *Matches*: the error's `code` or `type`, or its message.",
        "",
        "| # | where | status | matches | wire | kernel error | retried | waits for the server's delay | why |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, row in enumerate(ERROR_TABLE, 1):
        out.append(
            f"| {i} | {_where_cell(row)} | {_status_cell(row)} | {_match_cell(row)} | {row.wire} | "
            f"`{row.error.__name__}` | {'yes' if row.retryable else '**no**'} | {_delay_cell(row)} | {row.why} |"
        )
    out += [
        "",
        "## After the row",
        "",
        "* **`x-should-retry`** (HTTP response header, as OpenAI sends it): `true` makes the error retried and "
        "`false` makes it fail at once, whatever the row says (the official SDKs obey it first). Not for "
        "`ContextWindowExceeded` and `UsageLimitReached`: their host hooks run instead of a retry.",
        "* **The server's delay** (rows that wait for it): the largest of `retry-after-ms`, `Retry-After` "
        "(seconds or an HTTP date) and `try again in <n>(s|ms|seconds)` in the message; a retry on the same "
        "transport never comes sooner. The one exception, as in the seed: when a session spends its WebSocket "
        "retry budget and switches to HTTP, the first HTTP attempt goes at once.",
        "* **The cap**: a retryable error asking for a wait longer than `ModelSettings.max_retry_after` "
        "(default 120 s) is not slept: it fails at once, and its message names the requested wait and the cap.",
        "* **Messages** come from the response body only, never from request headers; bearer tokens and "
        "`sk-...` keys are redacted and long bodies cut. `ContextWindowExceeded`, `QuotaExceeded` and "
        "`UsageNotIncluded` keep the server's own words (or their default text).",
        "* Network failures (connect error naming the host:port it could not reach, read error, EOF before the "
        "end of the response, idle timeout) and malformed events are retried `StreamError`s (PROTOCOL §3); "
        "`response.incomplete` is a non-retried `IncompleteResponse`.",
        "",
        "## The samples",
        "",
        "Error bodies as the servers send them, each with its source (a few marked illustrative: the shape is "
        "real, the wording made up). The end-to-end test serves every one from the scripted server, on both wires "
        "(the Responses-only row on that wire), and counts the attempts: a retried row is attempted twice "
        "(the retry succeeds), a permanent one once. The `302` sample cannot be served (the scripted server "
        "answers errors with 4xx/5xx only); a unit test covers it.",
        "",
    ]
    for i, row in enumerate(ERROR_TABLE, 1):
        out.append(f"### {i}. {row.name} → `{row.error.__name__}`")
        out.append("")
        for sample in row.samples:
            out.append(f"* {sample.dialect}: {_sample_text(sample)}  ")
            out.append(f"  source: {sample.source}")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(errors_markdown(), end="")
