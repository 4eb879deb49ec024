"""The tool: :func:`make_apply_patch_tool` wraps :func:`~.apply_patch` as a freeform tool, with
:data:`APPLY_PATCH_DESCRIPTION`, the text that teaches the model the format."""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Final, Protocol

import trio

from actors.tools._registry import Tool, freeform_tool
from actors.tools.approvals import ApprovalRequest, Approvals
from actors.tools.sandbox import SandboxMode, SandboxPolicy
from kernel.items import FreeformToolFormat
from kernel.tools import RespondToModel

from ._apply import apply_patch, as_policy, read_only_refusal
from ._parse import APPLY_PATCH_LARK_GRAMMAR, parse_patch
from ._values import PatchError

__all__ = ["APPLY_PATCH_DESCRIPTION", "ApprovalChecker", "make_apply_patch_tool"]


APPLY_PATCH_DESCRIPTION: Final = """\
Use the `apply_patch` tool to edit files. This is a FREEFORM tool: send the patch itself as the \
input, do not wrap it in JSON.

A patch is a stripped-down, file-oriented diff:

*** Begin Patch
[ one or more file operations ]
*** End Patch

Each file operation starts with one of three headers:
*** Add File: <path> - create a new file. Every following line is a + line (the initial contents).
*** Delete File: <path> - remove an existing file. Nothing follows.
*** Update File: <path> - patch an existing file in place, optionally followed by \
*** Move to: <new path> to rename it.

An update is made of hunks, each introduced by @@ (optionally followed by a line of the file, such \
as a class or function definition, that the hunk comes after). Within a hunk every line starts \
with ' ' (context, unchanged), '-' (removed) or '+' (added). Show 3 lines of context above and \
below each change; do not repeat context shared with the previous hunk. If 3 lines of context do \
not identify the place uniquely, add an @@ line naming the enclosing class or function; several \
@@ lines in a row narrow it further. End a hunk that must match the end of the file with \
*** End of File.

Example:

*** Begin Patch
*** Add File: hello.txt
+Hello world
*** Update File: src/app.py
*** Move to: src/main.py
@@ def greet():
-print("Hi")
+print("Hello, world!")
*** Delete File: obsolete.txt
*** End Patch

Remember:
- Paths are relative to the workspace root, NEVER absolute, and must stay inside it.
- Prefix every new line with + even when creating a file.
- Context and - lines must match the current file; re-read a file before patching it if unsure.
- The patch applies all or nothing: if any hunk does not match, no file is changed."""
"""The tool description shown to the model: teaches the format (after codex's instructions)."""


class ApprovalChecker(Protocol):
    """What the tool needs of ``approvals``: :class:`~actors.tools.approvals.Approvals`, or any object
    whose async ``check`` returns to approve and raises (or returns ``False``) to refuse."""

    async def check(self, request: ApprovalRequest) -> Any: ...


def _description(policy: SandboxPolicy) -> str:
    """:data:`APPLY_PATCH_DESCRIPTION`, plus what ``policy`` allows when that is not just the
    workspace."""
    if policy.mode is SandboxMode.READ_ONLY:
        return APPLY_PATCH_DESCRIPTION + "\n- The sandbox policy is read-only: every patch is refused."
    if policy.mode is SandboxMode.WORKSPACE_WRITE and policy.writable_roots:
        roots = ", ".join(str(r) for r in policy.writable_roots)
        return (
            APPLY_PATCH_DESCRIPTION + f"\n- Besides the workspace you may write inside {roots} (name files there "
            "by absolute path). No .git directory may be changed."
        )
    return APPLY_PATCH_DESCRIPTION


def _model_error(exc: PatchError) -> str:
    text = str(exc)
    if not exc.changed and "nothing was changed" not in text:
        text += "\nNo files were changed: the patch applies all or nothing."
    return text


def make_apply_patch_tool(
    workspace: str | os.PathLike[str],
    *,
    approvals: Approvals | ApprovalChecker | None = None,
    name: str = "apply_patch",
    sandbox: SandboxPolicy | SandboxMode | str = SandboxMode.WORKSPACE_WRITE,
) -> Tool:
    """The ``apply_patch`` freeform tool for ``workspace``.

    Its spec is a :class:`~kernel.FreeformTool` with :data:`APPLY_PATCH_LARK_GRAMMAR` and
    :data:`APPLY_PATCH_DESCRIPTION`; it is not parallel-safe (each call runs alone). A call parses
    the patch (a malformed one is refused before anyone is asked), then, when ``approvals`` is
    given, awaits ``approvals.check(ApprovalRequest(kind="patch", tool=name, paths=<every path
    touched, as written in the patch, move destinations included>, patch=<the patch text>))``:
    :meth:`~actors.tools.approvals.Approvals.check` fills in the reason and refuses by raising
    :class:`~kernel.RespondToModel` (any object with such an async ``check`` works; one returning
    ``False`` refuses too). Then :func:`apply_patch` runs in a worker thread (not abandoned on
    cancellation: a patch is written whole or rolled back). A :class:`PatchError` becomes
    :class:`~kernel.RespondToModel`. The output is the JSON text ``{"output": summary,
    "metadata": {"exit_code": 0, "duration_seconds": seconds}}``.

    ``sandbox`` is the shell's policy (:class:`~actors.tools.sandbox.SandboxPolicy`, or a mode or
    its name), applied to writes: under ``read-only`` every patch is refused before anyone is
    asked; under ``workspace-write`` (the default) a patch writes only inside the workspace and the
    policy's ``writable_roots``, and one touching a root's ``.git`` is refused whole;
    ``danger-full-access`` writes inside the workspace (``.git`` included), never outside it.
    Raises :class:`ValueError` for an unknown mode.
    """
    root = Path(workspace)
    policy = as_policy(sandbox)

    async def apply_patch_tool(input: str) -> str:
        started = time.monotonic()
        try:
            patch = parse_patch(input)
        except PatchError as exc:
            raise RespondToModel(_model_error(exc)) from None
        if policy.mode is SandboxMode.READ_ONLY:
            raise RespondToModel(f"{name}: {read_only_refusal(patch)}")
        if approvals is not None:
            request = ApprovalRequest(kind="patch", tool=name, paths=patch.paths(), patch=patch.text)
            if await approvals.check(request) is False:
                raise RespondToModel(f"{name}: the patch was not approved; no files were changed")
        try:
            result = await trio.to_thread.run_sync(functools.partial(apply_patch, root, patch, sandbox=policy))
        except PatchError as exc:
            raise RespondToModel(_model_error(exc)) from None
        duration = round(time.monotonic() - started, 1)
        return json.dumps(
            {"output": result.summary, "metadata": {"exit_code": 0, "duration_seconds": duration}},
            ensure_ascii=False,
        )

    return freeform_tool(
        apply_patch_tool,
        name=name,
        description=_description(policy),
        format=FreeformToolFormat(type="grammar", syntax="lark", definition=APPLY_PATCH_LARK_GRAMMAR),
        parallel=False,
    )
