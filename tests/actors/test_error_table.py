"""The error table (actors/model/_error_table.py): its invariants, docs/errors.md, every sample of
every row end to end over the scripted server on both wires, x-should-retry, the requested-wait
cap and connection failures that name the host."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors import HttpSseTransport, ModelSettings, open_model_actor
from actors.model import StreamRequest, _responses
from actors.model._chat_errors import chat_error
from actors.model._error_table import (
    CONTEXT_WORDS,
    ERROR_TABLE,
    SDK_RESPONSE_ERROR_CODES,
    ErrorFacts,
    ErrorRow,
    Sample,
    cap_retry_after,
    classify,
    error_from_failure,
    errors_markdown,
    http_facts,
    stream_error,
    stream_facts,
)
from actors.model._http_errors import error_from_http
from actors.scripted import Failed, HttpError, Reply, Script, Text, open_scripted_server
from kernel import (
    ContextWindowExceeded,
    InvalidRequest,
    KernelError,
    Message,
    PreparedSamplingRequest,
    Prompt,
    PromptConfig,
    QuotaExceeded,
    RateLimited,
    SamplingRequestResult,
    ServerError,
    StreamError,
    ToolConfig,
    UsageLimitReached,
    run_sampling_request_loop,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
WIRES = ("responses", "chat")


def row_named(name: str) -> ErrorRow:
    return next(row for row in ERROR_TABLE if row.name == name)


def wires_of(row: ErrorRow) -> tuple[str, ...]:
    return WIRES if row.wire == "both" else (row.wire,)


def cases() -> list[Any]:
    return [
        pytest.param(row, sample, wire, id=f"{i}-{row.name}-{sample.dialect}-{sample.code or sample.status}-{wire}")
        for i, row in enumerate(ERROR_TABLE, 1)
        for sample in row.samples
        for wire in wires_of(row)
    ]


def classify_sample(sample: Sample, wire: str) -> tuple[ErrorRow, KernelError]:
    """The row and the error the mapping functions give for ``sample`` on ``wire``."""
    if sample.in_stream:
        obj = {"code": sample.code, "message": sample.message}
        err = error_from_failure(obj, "response.failed event received") if wire == "responses" else chat_error(obj)
        return classify(stream_facts(obj), wire), err
    body = sample.body if isinstance(sample.body, str) else httpx.Response(200, json=sample.body).text
    raw = body.encode()
    status = sample.status or 0
    return classify(http_facts(status, sample.headers, raw), wire), error_from_http(
        status, sample.headers, raw, wire=wire
    )


# ---------------------------------------------------------------------------------------------
# the table itself
# ---------------------------------------------------------------------------------------------


def test_rows_are_well_formed() -> None:
    names = [row.name for row in ERROR_TABLE]
    assert len(names) == len(set(names))
    for row in ERROR_TABLE:
        assert row.samples, f"{row.name}: every row has at least one real sample"
        assert row.retryable is row.error.retryable, f"{row.name}: the decision is the class's own"
        assert not row.honours_delay or row.retryable, f"{row.name}: only a retried error waits"
        assert row.why
        for sample in row.samples:
            assert sample.source and sample.dialect
            assert (sample.body is None) is sample.in_stream
    # two rows without conditions catch everything left, one per place an error is met (the stream one last)
    *_, http_last, stream_last = [r for r in ERROR_TABLE if not r.codes and r.message is None and not r.statuses]
    assert (http_last.where, stream_last.where) == ("http", "stream")
    assert ERROR_TABLE[-1] is stream_last


def test_the_sdk_response_error_codes_are_all_classified_explicitly() -> None:
    from openai.types.responses.response_error import ResponseError

    literal = ResponseError.model_fields["code"].annotation
    assert set(typing.get_args(literal)) == set(SDK_RESPONSE_ERROR_CODES)
    permanent = {"invalid_prompt", "data_residency_mismatch", "bio_policy", "misalignment_policy_violation"}
    for code in SDK_RESPONSE_ERROR_CODES:
        facts = ErrorFacts(where="stream", status=None, keys=frozenset({code}), message="m")
        row = classify(facts, "responses")
        assert code in row.codes, f"{code} falls through to {row.name}"
        err = error_from_failure({"code": code, "message": "m"}, "failed")
        if code == "rate_limit_exceeded":
            assert type(err) is RateLimited and err.retryable
        elif code in ("server_error", "vector_store_timeout", "failed_to_download_image"):
            assert type(err) is StreamError and err.retryable
        else:
            assert code in permanent or "image" in code
            assert type(err) is InvalidRequest and not err.retryable, code


@pytest.mark.parametrize(("row", "sample", "wire"), cases())
def test_every_sample_lands_on_its_own_row(row: ErrorRow, sample: Sample, wire: str) -> None:
    got, err = classify_sample(sample, wire)
    assert got is row
    assert type(err) is row.error and err.retryable is row.retryable
    if not row.honours_delay:
        assert err.retry_after is None
    if row.hint:
        assert row.hint in err.message
    assert "sk-" not in err.message or "***" in err.message


def test_docs_match_the_table() -> None:
    assert DOCS.read_text() == errors_markdown(), "regenerate: python -m actors.model._error_table > docs/errors.md"
    for i, row in enumerate(ERROR_TABLE, 1):
        assert f"| {i} |" in errors_markdown() and row.error.__name__ in errors_markdown()


# ---------------------------------------------------------------------------------------------
# specific decisions
# ---------------------------------------------------------------------------------------------


def test_in_stream_rate_limit_is_rate_limited_with_the_named_delay() -> None:
    message = "Rate limit reached for gpt-5. Please try again in 1.898s."
    for err in (
        error_from_failure({"code": "rate_limit_exceeded", "message": message}, "failed"),
        chat_error({"code": "rate_limit_exceeded", "message": message}),
    ):
        assert type(err) is RateLimited and err.retryable and err.retry_after == pytest.approx(1.898)


@pytest.mark.parametrize("status", [400, 403, 429, 500])
def test_insufficient_quota_on_any_status_and_in_stream(status: int) -> None:
    body = b'{"error": {"message": "You exceeded your current quota.", "code": "insufficient_quota"}}'
    assert type(error_from_http(status, {}, body)) is QuotaExceeded
    assert type(error_from_failure({"code": "insufficient_quota", "message": "q"}, "failed")) is QuotaExceeded
    assert type(chat_error({"code": "insufficient_quota", "message": "q"})) is QuotaExceeded


def test_local_context_overflows_at_400_are_context_window_exceeded_on_both_wires() -> None:
    vllm = b'{"error": {"message": "This model\'s maximum context length is 4096 tokens. However, you requested 5000 tokens.", "type": "BadRequestError", "param": null, "code": 400}}'
    for wire in (*WIRES, None):
        err = error_from_http(400, {}, vllm, wire=wire)
        assert type(err) is ContextWindowExceeded and "4096" in err.message
    # a 400 that does not say so stays a bad request; a 401 or a 5xx never becomes one
    assert type(error_from_http(400, {}, b'{"error": "unknown field foo"}')) is InvalidRequest
    assert type(error_from_http(401, {}, b"maximum context length")) is not ContextWindowExceeded
    assert type(error_from_http(500, {}, b"maximum context length")) is ServerError


@pytest.mark.parametrize(
    "text",
    [
        "This model's maximum context length is 8192 tokens.",
        "request (5120 tokens) exceeds the available context size (4096 tokens), try increasing it",
        "input (9000 tokens) is larger than the max context size (8192 tokens). skipping",
        "the prompt is longer than the context length currently available to the model",
        "the input length exceeds the context length",
        "input length (9000 tokens) exceeds the model's maximum context length (8192 tokens)",
        "Input does not fit in context length. The input has 31430 tokens",
        "Cannot truncate prompt with n_keep (15028) >= n_ctx (7424)",
        "Context size has been exceeded.",
        "The decoder prompt (length 9000) is longer than the maximum model length of 8192.",
        "You passed 98305 input tokens and requested 32768 output tokens. However, the model's context length is only 131072 tokens",
        "Your input exceeds the context window of this model.",
    ],
)
def test_context_overflow_wordings(text: str) -> None:
    assert CONTEXT_WORDS.search(text)
    assert type(chat_error({"message": text})) is ContextWindowExceeded


@pytest.mark.parametrize(
    "text",
    ["temperature must be non-negative", "model not found", "context_window must be set", "Invalid API Key"],
)
def test_other_words_are_not_context_overflows(text: str) -> None:
    assert not CONTEXT_WORDS.search(text)


def test_the_responses_404_hint_only_on_the_responses_wire() -> None:
    hint = row_named("404 unknown route (Responses wire)").hint
    assert hint in error_from_http(404, {}, b"404 page not found", wire="responses").message
    assert hint not in error_from_http(404, {}, b"404 page not found", wire="chat").message
    assert hint not in error_from_http(404, {}, b"404 page not found").message
    model_missing = b'{"error": {"message": "The model `x` does not exist", "code": "model_not_found"}}'
    assert hint not in error_from_http(404, {}, model_missing, wire="responses").message


def test_numeric_status_inside_an_in_stream_error_maps_like_http() -> None:
    assert type(chat_error({"message": "boom", "type": "server_error", "code": 500})) is ServerError
    assert type(chat_error({"message": "boom", "type": "server_error"})) is StreamError
    assert type(chat_error({"message": "bad", "type": "BadRequestError", "code": "400"})) is InvalidRequest
    assert type(stream_error({"message": "slow", "status": 429}, wire="chat")) is RateLimited


def test_messages_of_each_entry_point() -> None:
    assert error_from_http(400, {}, b'{"error": {"message": "nope"}}').message == "400 Bad Request: nope"
    assert error_from_failure({"code": "invalid_prompt", "message": "flagged"}, "failed").message == "flagged"
    assert error_from_failure({"code": "invalid_prompt"}, "failed").message == "failed (invalid_prompt)"
    assert error_from_failure(None, "response.failed event received").message == "response.failed event received"
    assert chat_error({"message": "nope", "code": 400}).message == "model server error: nope"
    assert chat_error({"weird": 1}).message == 'model server error: {"weird":1}'
    key = "sk-proj-" + "Q" * 24
    assert key not in error_from_failure({"code": "server_error", "message": f"bad {key}"}, "failed").message


# ---------------------------------------------------------------------------------------------
# x-should-retry and the cap
# ---------------------------------------------------------------------------------------------


def test_x_should_retry_is_obeyed_both_ways() -> None:
    err = error_from_http(503, {"X-Should-Retry": "false", "retry-after": "1"}, b"busy")
    assert type(err) is ServerError and not err.retryable and "x-should-retry: false" in err.message
    err = error_from_http(400, httpx.Headers({"x-should-retry": "true", "retry-after": "2"}), b"flaky")
    assert type(err) is InvalidRequest and err.retryable and err.retry_after == 2.0
    assert "InvalidRequest" in repr(err) and "retryable=True" in repr(err)
    # the host-hook errors keep their hooks
    ctx = b'{"error": {"code": "context_length_exceeded", "message": "too long"}}'
    assert not error_from_http(400, {"x-should-retry": "true"}, ctx).retryable
    # anything else is ignored
    assert error_from_http(503, {"x-should-retry": "maybe"}, b"").retryable


@pytest.mark.parametrize("source", ["header", "message", "stream"])
def test_a_wait_above_the_cap_fails_at_once(source: str) -> None:
    if source == "header":
        err = error_from_http(429, {"retry-after": "3600"}, b"slow down", max_retry_after=120)
    elif source == "message":
        err = error_from_http(429, {}, b"Please try again in 600s.", max_retry_after=120)
    else:
        err = error_from_failure(
            {"code": "rate_limit_exceeded", "message": "try again in 600s"}, "f", max_retry_after=120
        )
    assert type(err) is RateLimited and not err.retryable
    assert "120s" in err.message and ("3600s" in err.message or "600s" in err.message)
    # at or under the cap: retried as asked
    ok = error_from_http(429, {"retry-after": "120"}, b"", max_retry_after=120)
    assert ok.retryable and ok.retry_after == 120.0
    assert cap_retry_after(ok, None) is ok and ok.retryable


def test_cap_leaves_permanent_and_delay_free_errors_alone() -> None:
    err = InvalidRequest("bad")
    assert cap_retry_after(err, 0.0) is err and err.message == "bad"
    free = StreamError("blip")
    assert cap_retry_after(free, 0.0).retryable


# ---------------------------------------------------------------------------------------------
# end to end: every sample from the scripted server, through the actor and the sampling loop
# ---------------------------------------------------------------------------------------------


class Host:
    """The smallest SamplingHost: streams through the actor's client and records each retry."""

    def __init__(self) -> None:
        self.retried: list[KernelError] = []
        self.delays: list[float] = []

    async def prepare_sampling_request(self, input: Any) -> PreparedSamplingRequest[None, None]:
        await trio.lowlevel.checkpoint()
        return PreparedSamplingRequest(PromptConfig(), ToolConfig(), None, None)

    async def history_prompt_input(self) -> list[Any]:
        await trio.lowlevel.checkpoint()
        return [Message.user("hi")]

    async def run_single_sampling_request(
        self, runtime: None, tools: None, client: Any, prompt: Prompt
    ) -> SamplingRequestResult:
        async with client.stream(prompt) as batches:
            async for _ in batches:
                pass
        return SamplingRequestResult(needs_follow_up=False, last_agent_message="ok")

    def stream_max_retries(self) -> int:
        return 1

    def try_switch_fallback_transport(self, client: Any) -> bool:
        return False

    def should_notify_stream_retry(self, retries: int, err: KernelError) -> bool:
        return True

    async def handle_context_window_exceeded(self) -> None:
        await trio.lowlevel.checkpoint()

    async def handle_usage_limit_reached(self, rate_limits: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def notify_fallback_to_http(self, err: KernelError) -> None:
        await trio.lowlevel.checkpoint()

    async def notify_stream_retry(self, retries: int, max_retries: int, delay: float, err: KernelError) -> None:
        self.retried.append(err)
        self.delays.append(delay)
        await trio.lowlevel.checkpoint()


class CappedTransport:
    """HttpSseTransport with the cap applied where ModelActor._serve would apply it."""

    name = "http"

    def __init__(self, settings: ModelSettings) -> None:
        self.inner = HttpSseTransport(settings)
        self.open = self.inner.open
        self.session_state = self.inner.session_state
        self.cap = settings.max_retry_after

    async def stream(self, request: StreamRequest) -> None:
        try:
            await self.inner.stream(request)
        except KernelError as exc:
            raise cap_retry_after(exc, self.cap) from None


def fault_of(sample: Sample) -> HttpError | Failed:
    if sample.in_stream:
        return Failed(code=sample.code, message=sample.message)
    assert sample.status is not None and sample.body is not None
    return HttpError(status=sample.status, body=sample.body, headers=sample.headers)


async def serve(
    fault: HttpError | Failed, wire: str, *, capped: bool = False, max_retry_after: float = 120.0
) -> tuple[KernelError | None, Host, int]:
    """One logical request against a server answering ``fault`` then ``"ok"``: the error it ended
    with (``None``: it completed), the host's record, and how many requests reached the server."""
    script = Script(
        [Reply(faults=[fault], items=[Text("partial")] if isinstance(fault, Failed) else []), Reply(items=["ok"])]
    )
    host = Host()
    final: KernelError | None = None
    async with open_scripted_server(script) as server:
        settings = ModelSettings(
            base_url=server.base_url,
            model="scripted-model",
            wire=wire,  # type: ignore[arg-type]
            transport="http",
            max_retry_after=max_retry_after,
        )
        transports = [CappedTransport(settings)] if capped else None
        async with open_model_actor(settings, transports=transports) as actor:
            try:
                await run_sampling_request_loop(host, actor.client(), [Message.user("hi")])
            except KernelError as exc:
                final = exc
        attempts = len([r for r in server.requests if r.endpoint is not None])
    return final, host, attempts


def test_the_responses_decoder_classifies_through_the_table() -> None:
    assert _responses.error_from_failure is error_from_failure


def producible(sample: Sample) -> bool:
    """The scripted server answers HTTP errors with a 4xx/5xx only (HttpError's validator)."""
    return sample.in_stream or (sample.status is not None and 400 <= sample.status <= 599)


def test_only_the_unexpected_status_row_cannot_be_served() -> None:
    unservable = [(row.name, s.status) for row in ERROR_TABLE for s in row.samples if not producible(s)]
    assert unservable == [("unexpected HTTP status", 302)]


@pytest.mark.parametrize(("row", "sample", "wire"), [c for c in cases() if producible(c.values[1])])
async def test_every_row_end_to_end(
    row: ErrorRow, sample: Sample, wire: str, autojump_clock: trio.testing.MockClock
) -> None:
    final, host, attempts = await serve(fault_of(sample), wire)
    if row.retryable:
        # retried once (the budget), then the second reply completes
        assert final is None, final
        assert attempts == 2
        assert [type(e) for e in host.retried] == [row.error]
        if row.honours_delay and host.retried[0].retry_after is not None:
            assert host.delays == [host.retried[0].retry_after]
    else:
        assert type(final) is row.error, final
        assert attempts == 1 and host.retried == []


async def test_x_should_retry_end_to_end(autojump_clock: trio.testing.MockClock) -> None:
    refused = HttpError(status=503, message="busy", type="server_error", headers={"x-should-retry": "false"})
    final, host, attempts = await serve(refused, "responses")
    assert type(final) is ServerError and attempts == 1 and not host.retried
    forced = HttpError(status=400, message="flaky", type="invalid_request_error", headers={"x-should-retry": "true"})
    final, host, attempts = await serve(forced, "chat")
    assert final is None and attempts == 2 and [type(e) for e in host.retried] == [InvalidRequest]


@pytest.mark.parametrize("wire", WIRES)
async def test_a_wait_above_the_cap_is_not_slept_end_to_end(wire: str, autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    final, host, attempts = await serve(HttpError.rate_limited(retry_after=3600), wire, capped=True, max_retry_after=60)
    assert type(final) is RateLimited and not final.retryable and attempts == 1 and not host.retried
    assert "3600s" in final.message and "60s" in final.message
    in_stream = Failed("rate_limit_exceeded", "Rate limit reached. Please try again in 90s.")
    final, host, attempts = await serve(in_stream, wire, capped=True, max_retry_after=60)
    assert type(final) is RateLimited and attempts == 1 and "90s" in final.message
    assert trio.current_time() - start < 1.0  # nothing was slept
    # under the cap the wait is honoured
    final, host, attempts = await serve(HttpError.rate_limited(retry_after=30), wire, capped=True, max_retry_after=60)
    assert final is None and attempts == 2 and host.delays == [30.0]


async def test_usage_limit_keeps_its_details_end_to_end() -> None:
    fault = HttpError.usage_limit_reached(plan_type="pro", resets_at=1_760_000_000)
    final, _, attempts = await serve(fault, "responses")
    assert isinstance(final, UsageLimitReached) and attempts == 1
    assert final.plan_type == "pro" and final.resets_at == 1_760_000_000.0


# ---------------------------------------------------------------------------------------------
# connection failures name the host
# ---------------------------------------------------------------------------------------------


async def test_an_unresolvable_host_is_named() -> None:
    token = "tok-" + "z" * 12  # not key-shaped: the point is that it never shows
    settings = ModelSettings(base_url="http://no-such-host.invalid/v1", model="m", transport="http", api_key=token)
    async with open_model_actor(settings) as actor:
        with pytest.raises(StreamError) as caught:
            async with actor.client().stream(Prompt(input=[Message.user("hi")])) as batches:
                async for _ in batches:
                    pass
    text = str(caught.value)
    assert "no-such-host.invalid:80" in text and text.startswith("ConnectError: cannot reach ")
    assert token not in text and "Bearer" not in text and caught.value.retryable


def test_describe_names_host_and_port_without_secrets() -> None:
    token = "tok-" + "y" * 12
    transport = HttpSseTransport(ModelSettings(base_url="https://user:pw@example.test/v1", model="m", api_key=token))
    request = httpx.Request("POST", "https://user:pw@example.test/v1/responses?key=abc")
    exc = httpx.ConnectTimeout(f"timed out with {token}", request=request)
    text = transport._describe(exc)
    assert text.startswith("ConnectTimeout: cannot reach example.test:443")
    assert token not in text and "pw" not in text and "key=abc" not in text
    read = httpx.ReadError("connection reset", request=httpx.Request("POST", "http://[::1]:8080/v1/responses"))
    assert transport._describe(read) == "ReadError (from [::1]:8080): connection reset"
    no_request = httpx.RemoteProtocolError("peer closed connection")
    assert "example.test:443" in transport._describe(no_request)
