"""trio-agent-kernel's runtime: the actors, the real transports and the scripted model server.

One package per actor, each started by a nursery (``open_*`` context managers): ``model`` (the
ModelActor, its transports behind the ``ModelTransport`` seam — Responses over WebSocket with
HTTP+SSE behind it by default — and the Responses and Chat Completions wire codecs), ``tools`` (the ToolActor, the ``@tool`` registry,
``tools.approvals`` and the built-in ``shell`` and ``apply_patch`` tools in ``tools.builtin``),
``history`` (the ordered log and the JSONL rollout), ``compaction`` (shortening a history that
outgrows the context window), ``notify`` (fan-out of events to subscribers);
``session`` wires them (``open_session``); ``secrets`` keeps secret values out of everything recorded
(``Redactor``). Around them: ``scripted`` (the scripted model server),
``testing`` (the session stress machine), ``batch`` (batch runs, local and Ray) and ``cli`` (the
``agent-kernel`` command line). This file re-exports every public name once.
"""

from .compaction import (
    CompactionFailed as CompactionFailed,
    SessionCompactor as SessionCompactor,
)
from .history import (
    Compaction as Compaction,
    HistoryActor as HistoryActor,
    HistoryClient as HistoryClient,
    HistoryClosed as HistoryClosed,
    ResumedSession as ResumedSession,
    RolloutError as RolloutError,
    RolloutWarning as RolloutWarning,
    SessionMeta as SessionMeta,
    open_history as open_history,
    resume as resume,
)
from .model import (
    HttpModelClient as HttpModelClient,
    HttpSseTransport as HttpSseTransport,
    ModelActor as ModelActor,
    ModelSettings as ModelSettings,
    ModelTransport as ModelTransport,
    WebSocketTransport as WebSocketTransport,
    open_model_actor as open_model_actor,
)
from .notify import (
    NotificationActor as NotificationActor,
    Notifier as Notifier,
    Subscription as Subscription,
)
from .secrets import (
    RedactingClient as RedactingClient,
    RedactingToolExecutor as RedactingToolExecutor,
    Redactor as Redactor,
)
from .session import (
    Session as Session,
    TurnHandle as TurnHandle,
    TurnStream as TurnStream,
    open_session as open_session,
    run_session as run_session,
)
from .tools import (
    Tool as Tool,
    ToolActor as ToolActor,
    ToolActorClosed as ToolActorClosed,
    ToolInvocation as ToolInvocation,
    ToolRegistry as ToolRegistry,
    freeform_tool as freeform_tool,
    open_tool_actor as open_tool_actor,
    tool as tool,
)
from .tools.approvals import (
    ApprovalPolicy as ApprovalPolicy,
    ApprovalRequest as ApprovalRequest,
    Approvals as Approvals,
    Approver as Approver,
    is_read_only_command as is_read_only_command,
)
from .tools.builtin import builtin_tools as builtin_tools
