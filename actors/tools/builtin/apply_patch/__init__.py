"""The built-in ``apply_patch`` freeform tool: codex's patch format, applied all or nothing inside a
workspace.

The format (codex's ``apply_patch``; :data:`APPLY_PATCH_LARK_GRAMMAR` is its Lark grammar)::

    *** Begin Patch
    *** Add File: path/new.txt
    +line one
    +line two
    *** Update File: src/app.py
    *** Move to: src/main.py          (optional)
    @@ def greet():                    (optional context header; may repeat; a bare @@ is allowed)
     context line
    -old line
    +new line
     context line
    *** End of File                    (optional: the hunk is anchored at the end of the file)
    *** Delete File: old.txt
    *** End Patch

Three layers:

* :func:`parse_patch` turns the text into a :class:`Patch` of typed hunks (:class:`AddFile`,
  :class:`DeleteFile`, :class:`UpdateFile` made of :class:`UpdateChunk`), raising
  :class:`PatchError` with the patch line number on malformed input. It is as lenient as codex:
  whitespace around the markers, a heredoc wrapper (``<<'EOF'`` ... ``EOF``), CRLF line ends,
  blank lines between hunks, a first chunk without ``@@``. Beyond codex: several ``@@`` lines in a
  row narrow the position step by step (as codex's own instructions describe), a unified-diff
  header ``@@ -12,7 +12,8 @@ text`` counts as ``@@ text``, and a ``*** Move to:`` without
  chunks is a pure rename.

* :func:`apply_patch` (synchronous) applies a patch to a workspace directory, writing only where
  the sandbox policy (the shell's: :class:`~actors.tools.sandbox.SandboxPolicy`) lets commands
  write. Every path must be relative and stay inside the workspace: absolute paths, ``..`` escapes
  and symbolic links (in any component, the file itself included) that resolve outside the root are
  refused, naming the path. Under ``workspace-write`` (the default) a path may also lead into one of
  the policy's ``writable_roots`` (there an absolute path is accepted too), and a path in a root's
  ``.git`` is refused; ``danger-full-access`` keeps to the workspace, ``.git`` included;
  ``read-only`` refuses every patch.
  It is all or nothing: every hunk is first verified against the files' current contents and every
  new content computed in memory (the hunks see the effect of earlier hunks of the same patch); an
  Update or Delete of a missing file, an Add of an existing one, or a chunk whose lines are not
  found raises :class:`PatchError` (the file, the hunk number, the approximate line, the expected
  lines and the closest lines found) and nothing is written. Then each file is written to a
  temporary file in its own directory and moved into place with :func:`os.replace` (atomic per
  file), parent directories are created for adds and moves, and deletions come last; if anything
  fails midway, the files already written are restored from in-memory backups (content, mode and
  times) and the directories created are removed, so the workspace ends as it was. Writing follows
  no symbolic link: directories are opened from the root down with ``O_NOFOLLOW`` and files handled
  relative to them, so a link swapped in after the check makes the write fail, not escape.

  Matching follows codex's ``seek_sequence``: exact, then ignoring trailing whitespace, then
  ignoring surrounding whitespace, then also mapping typographic dashes, quotes and spaces to ASCII.
  Updated files keep their byte-order mark, their CRLF line ends (when every line end is CRLF) and
  their mode, and end with a newline (as in codex). A chunk with no ``-`` or context lines is
  inserted right after its ``@@`` context line, or at the end of the file when it has none.

* :func:`make_apply_patch_tool` wraps it as a freeform :class:`~actors.tools.Tool` (Lark grammar,
  a description that teaches the format, exclusive scheduling). A call is checked with the
  optional approvals object (``await approvals.check(ApprovalRequest(kind="patch", ...))``), then
  applied in a worker thread; a :class:`PatchError` becomes a model-visible
  :class:`~kernel.RespondToModel`. Success output is the shell-like JSON
  ``{"output": "Success. Updated the following files:\\nA ...", "metadata": {"exit_code": 0,
  "duration_seconds": 0.0}}`` that :meth:`kernel.Prompt.formatted_input` re-serialises.

Layout: ``_values`` (the patch, its hunks, the result and the error), ``_parse`` (the parser and the
grammar), ``_match`` (finding the chunks in a file and computing its new text), ``_plan`` (verifying
every hunk against a virtual view of the workspace), ``_apply`` (writing with rollback, and
:func:`apply_patch`), ``_tool`` (:func:`make_apply_patch_tool`). This file re-exports the public names.
"""

from ._apply import apply_patch as apply_patch
from ._parse import APPLY_PATCH_LARK_GRAMMAR as APPLY_PATCH_LARK_GRAMMAR, parse_patch as parse_patch
from ._tool import (
    APPLY_PATCH_DESCRIPTION as APPLY_PATCH_DESCRIPTION,
    ApprovalChecker as ApprovalChecker,
    make_apply_patch_tool as make_apply_patch_tool,
)
from ._values import (
    AddFile as AddFile,
    DeleteFile as DeleteFile,
    Hunk as Hunk,
    Patch as Patch,
    PatchError as PatchError,
    PatchResult as PatchResult,
    UpdateChunk as UpdateChunk,
    UpdateFile as UpdateFile,
)

__all__ = [
    "APPLY_PATCH_LARK_GRAMMAR",
    "APPLY_PATCH_DESCRIPTION",
    "PatchError",
    "AddFile",
    "DeleteFile",
    "UpdateChunk",
    "UpdateFile",
    "Hunk",
    "Patch",
    "PatchResult",
    "ApprovalChecker",
    "parse_patch",
    "apply_patch",
    "make_apply_patch_tool",
]
