"""The two wire formats a model endpoint speaks: the request path, the request body and the
streaming decoder of each. A transport moves bytes; the wire decides what they mean."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from kernel.prompt import Prompt

from .transport import StreamDecoder

if TYPE_CHECKING:
    from ._actor import ModelSettings

__all__ = ["endpoint_path", "request_body", "encode_body", "encode_json", "new_decoder"]

_JSON_ENCODER = msgspec.json.Encoder()


def endpoint_path(wire: str) -> str:
    """The path under ``base_url`` requests of ``wire`` go to."""
    return "responses" if wire == "responses" else "chat/completions"


def request_body(
    settings: ModelSettings, prompt: Prompt, wire_cache: dict[int, tuple[Any, dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """The JSON body of one streaming request for ``prompt`` on ``settings.wire`` (``wire_cache``:
    a session's cache of encoded input items, Responses wire only)."""
    if settings.wire == "chat":
        from ._chat import chat_request_body

        return chat_request_body(prompt, model=settings.model)
    from ._responses import responses_request_body

    body = responses_request_body(
        prompt,
        model=settings.model,
        reasoning_effort=settings.reasoning_effort,
        reasoning_summary=settings.reasoning_summary,
        prompt_cache_key=prompt.prompt_cache_key,
        wire_cache=wire_cache,
    )
    if settings.compaction == "server":
        # the service compacts past the threshold and returns the compaction item (PROTOCOL §6)
        from kernel.compaction import compact_threshold

        threshold = compact_threshold(settings.context_window, settings.auto_compact_tokens)
        if threshold is not None:
            body["context_management"] = [{"type": "compaction", "compact_threshold": threshold}]
    return body


def encode_body(settings: ModelSettings, prompt: Prompt) -> bytes:
    """:func:`request_body` as compact UTF-8 JSON (msgspec: ~10x faster than ``json.dumps``)."""
    return encode_json(request_body(settings, prompt))


def encode_json(body: dict[str, Any]) -> bytes:
    """A body as compact UTF-8 JSON, with the same encoder as :func:`encode_body`."""
    return _JSON_ENCODER.encode(body)


def new_decoder(wire: str, prompt: Prompt) -> StreamDecoder:
    """A fresh streaming decoder for one response on ``wire``."""
    if wire == "chat":
        from ._chat import ChatStreamDecoder

        return ChatStreamDecoder.for_prompt(prompt)
    from ._responses import ResponsesStreamDecoder

    return ResponsesStreamDecoder()
