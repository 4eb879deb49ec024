"""Per-event CPU cost of decoding a Responses API SSE stream (DESIGN.md, "Performance budget").

Builds a 20,000-delta ``response.output_text.delta`` stream in memory (shaped like the official
API's events: ``sequence_number``, ``item_id``, indices, ``delta``, ``logprobs``,
``obfuscation``), cuts it into 16 KiB reads and measures CPU µs per event
(``time.process_time``, median of the runs) for:

(a) the floor: httpx's own incremental text + line decoders (what ``Response.iter_lines`` does)
    and ``json.loads`` on every ``data:`` line — no dispatch, no kernel objects;
(b) :class:`actors.model._responses.ResponsesStreamDecoder` — SSE splitting, typed decoding and the
    kernel's :mod:`kernel.stream` event objects;
(c) for reference, the two stages of (b) alone: the SSE splitter, and the splitter plus the
    msgspec struct decode (no event objects).

Run: ``python benchmarks/bench_decode.py [--events N] [--runs R] [--chunk BYTES]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actors.model._responses import ResponsesStreamDecoder, _decode_event
from actors.model._sse import SSEDecoder

WORDS = (
    "The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ".",
    " Ünïcødé",
    ' "quoted"',
    " tab\t",
    " newline\n",
    " 42",
)


def build_stream(n_deltas: int) -> bytes:
    """A complete Responses stream with ``n_deltas`` text deltas."""
    item_id = "msg_67ccf190ca3881909d433c50b1f6357e087bb177ab789d5c"
    seq = 0
    parts: list[bytes] = []

    def emit(event: dict[str, object]) -> None:
        nonlocal seq
        event["sequence_number"] = seq
        seq += 1
        body = json.dumps(event, separators=(",", ":"))
        parts.append(f"event: {event['type']}\ndata: {body}\n\n".encode())

    emit(
        {
            "type": "response.created",
            "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []},
        }
    )
    emit(
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []},
        }
    )
    text: list[str] = []
    for i in range(n_deltas):
        delta = WORDS[i % len(WORDS)]
        text.append(delta)
        emit(
            {
                "type": "response.output_text.delta",
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
                "obfuscation": "x7Qp2",
            }
        )
    full = "".join(text)
    emit(
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {
                "id": item_id,
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": full, "annotations": []}],
            },
        }
    )
    emit(
        {
            "type": "response.completed",
            "response": {
                "id": "resp_1",
                "object": "response",
                "status": "completed",
                "output": [],
                "usage": {
                    "input_tokens": 10,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": n_deltas,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 10 + n_deltas,
                },
            },
        }
    )
    return b"".join(parts)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- (a) the floor ---------------------------------------------------------------------------


def _httpx_decoders() -> tuple[Callable[[], object], Callable[[], object]] | None:
    try:
        from httpx._decoders import LineDecoder, TextDecoder
    except Exception:
        return None
    return TextDecoder, LineDecoder


def floor(chunks: list[bytes]) -> int:
    """httpx ``iter_lines`` (incremental UTF-8 text decoder + line decoder) and ``json.loads``
    of each ``data:`` line. Returns the number of events decoded."""
    loads = json.loads
    count = 0
    decoders = _httpx_decoders()
    if decoders is not None:
        text_decoder = decoders[0]()
        line_decoder = decoders[1]()
        for chunk in chunks:
            for line in line_decoder.decode(text_decoder.decode(chunk)):  # type: ignore[attr-defined]
                if line.startswith("data: "):
                    loads(line[6:])
                    count += 1
        for line in line_decoder.decode(text_decoder.flush()):  # type: ignore[attr-defined]
            if line.startswith("data: "):
                loads(line[6:])
                count += 1
        return count
    # equivalent of httpx's decoders (incremental utf-8, splitlines with a carried tail)
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    for chunk in chunks:
        text = buffer + dec.decode(chunk)
        lines = text.splitlines()
        buffer = lines.pop() if text and not text.endswith(("\n", "\r")) else ""
        for line in lines:
            if line.startswith("data: "):
                loads(line[6:])
                count += 1
    return count


# --- (b) the decoder --------------------------------------------------------------------------


def kernel_decoder(chunks: list[bytes]) -> int:
    dec = ResponsesStreamDecoder()
    count = 0
    for chunk in chunks:
        count += len(dec.feed(chunk))
    dec.finish()
    assert dec.error is None, dec.error
    return count


# --- (c) stages -----------------------------------------------------------------------------


def sse_only(chunks: list[bytes]) -> int:
    sse = SSEDecoder()
    count = 0
    for chunk in chunks:
        count += len(sse.feed(chunk))
    return count


def sse_and_struct(chunks: list[bytes]) -> int:
    sse = SSEDecoder()
    decode = _decode_event
    count = 0
    for chunk in chunks:
        for _name, data in sse.feed(chunk):
            decode(data)
            count += 1
    return count


def measure_interleaved(
    fns: list[Callable[[list[bytes]], int]], chunks: list[bytes], n_events: int, runs: int
) -> list[list[float]]:
    """CPU µs per event of each function, ``runs`` samples each, interleaved (a, b, c, a, b, c,
    ...) so that load drift on a shared machine hits all of them alike. One warm-up each."""
    for fn in fns:
        fn(chunks)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            gc.collect()
            start = time.process_time()
            got = fn(chunks)
            elapsed = time.process_time() - start
            if got < n_events - 4:
                raise AssertionError(f"{fn.__name__} decoded {got} of {n_events} events")
            samples[i].append(elapsed / n_events * 1e6)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="text deltas in the stream")
    parser.add_argument("--runs", type=int, default=7, help="timed runs (median taken; >= 5)")
    parser.add_argument("--chunk", type=int, default=16 * 1024, help="bytes per read")
    args = parser.parse_args(argv)
    runs = max(5, args.runs)

    stream = build_stream(args.events)
    chunks = split(stream, args.chunk)
    n_events = args.events + 4  # created, item added, item done, completed
    print(
        f"stream: {n_events} events, {len(stream) / 1024:.0f} KiB in {len(chunks)} reads of "
        f"{args.chunk} B; median of {runs} runs, CPU time (process_time)"
    )
    if _httpx_decoders() is None:
        print("note: httpx's private decoders not importable; using an equivalent line splitter")

    fa, fb, fs, fsj = measure_interleaved([floor, kernel_decoder, sse_only, sse_and_struct], chunks, n_events, runs)
    a, b, sp, sj = (statistics.median(x) for x in (fa, fb, fs, fsj))
    ratio = statistics.median(y / x for x, y in zip(fa, fb))
    print(f"(a) floor: httpx iter_lines + json.loads       {a:6.2f} µs/event")
    print(f"(b) ResponsesStreamDecoder (kernel events)      {b:6.2f} µs/event")
    print(f"    ratio (b)/(a), median of per-run ratios     {ratio:6.2f}")
    print(f"(c) stages of (b): SSE split only               {sp:6.2f} µs/event")
    print(f"                   SSE split + msgspec struct   {sj:6.2f} µs/event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
