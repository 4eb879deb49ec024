"""trio-agent-kernel's runtime: the actors, the real transports and the scripted model server.

Each actor owns its state in one Trio task and is started by a nursery (``open_*`` context
managers): ``model`` (the HTTP ModelActor: Responses or Chat Completions streaming), ``tools``
(the ToolActor and the ``@tool`` registry), ``history`` (the ordered log and the JSONL rollout),
``notify`` (fan-out of events to subscribers) and ``session`` (wires them: ``open_session``);
``approvals`` (when to ask before a command or patch) and ``builtin`` (the ``shell`` and
``apply_patch`` tools); ``cli`` is the ``agent-kernel`` command line.
``actors.scripted`` is the scripted model server. This file re-exports every public name once.
"""

from .approvals import (
    ApprovalPolicy as ApprovalPolicy,
    ApprovalRequest as ApprovalRequest,
    Approvals as Approvals,
    Approver as Approver,
    is_read_only_command as is_read_only_command,
)
from .builtin import builtin_tools as builtin_tools
from .history import (
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
    ModelActor as ModelActor,
    ModelSettings as ModelSettings,
    open_model_actor as open_model_actor,
)
from .notify import (
    NotificationActor as NotificationActor,
    Notifier as Notifier,
    Subscription as Subscription,
)
from .session import (
    Session as Session,
    TurnHandle as TurnHandle,
    open_session as open_session,
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
