"""The built-in demo: a scripted model that runs the real loop in a workspace.

``agent-kernel exec`` without model flags serves :data:`DEMO_SCRIPT` from an in-process scripted
server on 127.0.0.1 (no key, no network). The model looks around with ``shell``, writes two files
with ``apply_patch``, runs the program it wrote, then sums up — every tool call is real and runs
in the workspace. The session is told the model's context window is :data:`DEMO_CONTEXT_WINDOW`
tokens, and the third response reports an input past 90 % of it, so the history is compacted
(remotely: the scripted server's ``/v1/responses/compact``) before the last request.
"""

from __future__ import annotations

from actors.scripted import CustomToolCall, FunctionCall, Reasoning, Reply, Script, Text, Usage

__all__ = ["DEMO_MODEL", "DEMO_TASK", "DEMO_SCRIPT", "DEMO_PATCH", "DEMO_CONTEXT_WINDOW"]

DEMO_MODEL = "scripted-demo"
"""The model name the demo's responses carry."""

DEMO_CONTEXT_WINDOW = 1000
"""The context window (tokens) the demo session is told its model has (compaction at 900)."""

DEMO_TASK = "Write a small Python program that prints a greeting, add a notes file, and run the program."
"""The task shown when ``agent-kernel exec`` runs the demo without one."""

DEMO_PATCH = """\
*** Begin Patch
*** Add File: hello.py
+\"\"\"A greeting, written by the agent-kernel demo.\"\"\"
+
+
+def main() -> None:
+    print("Hello from trio-agent-kernel!")
+
+
+if __name__ == "__main__":
+    main()
*** Add File: NOTES.md
+# Notes
+
+- `hello.py` prints a greeting: run `python3 hello.py`.
+- Written by the agent-kernel demo: a scripted model server on 127.0.0.1 drove the real
+  loop (streaming, tool calls, outputs fed back) with the built-in `shell` and `apply_patch` tools.
*** End Patch
"""


def _shell(call_id: str, script: str) -> FunctionCall:
    return FunctionCall(call_id, "shell", {"command": ["bash", "-lc", script]}, chunk_size=16)


DEMO_SCRIPT = Script(
    [
        Reply(
            items=[
                Reasoning(["Start by looking at what the workspace holds."], chunk_size=12),
                Text("Let me look at the workspace first.", chunk_size=6),
                _shell("call_demo_ls", "ls -la"),
            ],
            usage=Usage(input_tokens=412, output_tokens=38),
            delta_delay=0.01,
        ),
        Reply(
            items=[
                Text("Now I'll add `hello.py` and a `NOTES.md`.", chunk_size=6),
                CustomToolCall("call_demo_patch", "apply_patch", DEMO_PATCH, chunk_size=48),
            ],
            usage=Usage(input_tokens=596, cached_tokens=384, output_tokens=171),
            delta_delay=0.01,
        ),
        Reply(
            items=[Text("Let me run it.", chunk_size=6), _shell("call_demo_run", "python3 hello.py")],
            # past 90 % of the demo's window: the session compacts before the next request
            usage=Usage(input_tokens=905, cached_tokens=512, output_tokens=29),
            delta_delay=0.01,
        ),
        Reply(
            items=[
                Text(
                    "Done. I listed the workspace, added `hello.py` (it prints a greeting) and "
                    "`NOTES.md`, and ran `python3 hello.py`, which printed "
                    '"Hello from trio-agent-kernel!".',
                    chunk_size=5,
                )
            ],
            usage=Usage(input_tokens=870, cached_tokens=768, output_tokens=46),
            delta_delay=0.01,
        ),
    ],
    model=DEMO_MODEL,
)
"""The demo: ``shell`` (``ls -la``), ``apply_patch`` (adds ``hello.py`` and ``NOTES.md``),
``shell`` (``python3 hello.py``), a compaction, then a summary."""
