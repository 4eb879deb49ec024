"""Public test helpers: Hypothesis strategies and an in-memory scripted host.

Users stress-test their own hosts and tools with these (needs the ``test`` extra for Hypothesis)::

    from hypothesis import given
    from kernel.testing import wire_items, fault_schedules, ScriptedModel, InMemoryHistory

    @given(wire_items())
    def test_my_store_keeps_items(wire): ...

Strategies:

* :func:`wire_items` — valid wire objects of every item type the kernel models, plus unknown types
  and unknown fields; :func:`odd_wire_items` — malformed ones (missing fields, wrong JSON types);
* :func:`tool_specs`, :func:`prompts`;
* :func:`fault_schedules` — lists of :class:`Fault` (what goes wrong on each attempt);
  :meth:`Fault.to_error` gives the matching :class:`~kernel.errors.KernelError`;
* hostile input for decoders and codecs: :func:`adversarial_sse_streams` (SSE bytes with
  truncated UTF-8, odd line ends, comments, unknown events, wrong types, deep nesting, giant
  lines), :func:`chunkings` (any split of a byte string), :func:`adversarial_json_texts`,
  :func:`hostile_wire_values` (for :func:`~kernel.item_from_wire` / :func:`~kernel.tool_from_wire`),
  :func:`injection_texts` (text that looks like rollout records or SSE events).

Checks and knobs:

* :func:`well_formed_violations` / :func:`assert_well_formed` — every tool call has exactly one
  output after it, no output without a call;
* :class:`FastBackoff` — a ``random.Random`` for ``TurnHost.rng`` that scales the backoff
  (``0.2 s × 2^(n-1)``) down, so stress tests retry in milliseconds.

The session-level stress state machine (real sockets, the scripted server, crashes and resume)
lives in :mod:`actors.testing`, since it drives the runtime.

In-memory parts (no I/O, deterministic):

* :class:`ScriptedModel` — a :class:`~kernel.stream.ModelClient` that plays scripted responses
  and faults, records every prompt it was sent, and can have a fallback transport;
* :class:`InMemoryHistory`, :class:`RecordingSink`;
* :class:`FunctionTools` — a :class:`~kernel.tools.ToolExecutor` over plain async functions.
"""

from ._checks import (
    assert_well_formed as assert_well_formed,
    well_formed_violations as well_formed_violations,
)
from ._host import (
    FastBackoff as FastBackoff,
    FunctionToolCall as FunctionToolCall,
    FunctionTools as FunctionTools,
    InMemoryHistory as InMemoryHistory,
    RecordingSink as RecordingSink,
    ScriptedModel as ScriptedModel,
    ScriptedResponse as ScriptedResponse,
    text_response as text_response,
    tool_call_response as tool_call_response,
)
from ._hostile import (
    INJECTION_TEXTS as INJECTION_TEXTS,
    adversarial_json_texts as adversarial_json_texts,
    adversarial_sse_streams as adversarial_sse_streams,
    chunkings as chunkings,
    hostile_wire_values as hostile_wire_values,
    injection_texts as injection_texts,
)
from ._strategies import (
    FAULT_KINDS as FAULT_KINDS,
    Fault as Fault,
    fault_schedules as fault_schedules,
    odd_wire_items as odd_wire_items,
    prompts as prompts,
    tool_specs as tool_specs,
    wire_items as wire_items,
)

__all__ = [
    "wire_items",
    "odd_wire_items",
    "tool_specs",
    "prompts",
    "fault_schedules",
    "Fault",
    "FAULT_KINDS",
    "ScriptedModel",
    "ScriptedResponse",
    "text_response",
    "tool_call_response",
    "InMemoryHistory",
    "RecordingSink",
    "FunctionTools",
    "FunctionToolCall",
    "FastBackoff",
    "well_formed_violations",
    "assert_well_formed",
    "chunkings",
    "adversarial_json_texts",
    "adversarial_sse_streams",
    "hostile_wire_values",
    "injection_texts",
    "INJECTION_TEXTS",
]
