"""trio-agent-kernel's runtime: the actors, the real transports and the scripted model server.

Each actor owns its state in one Trio task and is started by a nursery (``open_*`` context
managers): ``model`` (the HTTP ModelActor: Responses or Chat Completions streaming), ``tools``
(the ToolActor and the ``@tool`` registry), ``history`` (the ordered log and the JSONL rollout),
``notify`` (fan-out of events to subscribers) and ``session`` (wires them: ``open_session``);
``approvals`` (when to ask before a command or patch) and ``builtin`` (the ``shell`` and
``apply_patch`` tools); ``cli`` is the ``agent-kernel`` command line.
``actors.scripted`` is the scripted model server. This file re-exports every public name once.
"""

from .history import (
    HistoryActor as HistoryActor,
)
from .history import (
    HistoryClient as HistoryClient,
)
from .history import (
    HistoryClosed as HistoryClosed,
)
from .history import (
    ResumedSession as ResumedSession,
)
from .history import (
    RolloutError as RolloutError,
)
from .history import (
    RolloutWarning as RolloutWarning,
)
from .history import (
    SessionMeta as SessionMeta,
)
from .history import (
    open_history as open_history,
)
from .history import (
    resume as resume,
)
from .model import (
    HttpModelClient as HttpModelClient,
)
from .model import (
    ModelActor as ModelActor,
)
from .model import (
    ModelSettings as ModelSettings,
)
from .model import (
    open_model_actor as open_model_actor,
)
from .notify import (
    NotificationActor as NotificationActor,
)
from .notify import (
    Notifier as Notifier,
)
from .notify import (
    Subscription as Subscription,
)
from .session import (
    Session as Session,
)
from .session import (
    TurnHandle as TurnHandle,
)
from .session import (
    open_session as open_session,
)
from .tools import (
    Tool as Tool,
)
from .tools import (
    ToolActor as ToolActor,
)
from .tools import (
    ToolActorClosed as ToolActorClosed,
)
from .tools import (
    ToolInvocation as ToolInvocation,
)
from .tools import (
    ToolRegistry as ToolRegistry,
)
from .tools import (
    freeform_tool as freeform_tool,
)
from .tools import (
    open_tool_actor as open_tool_actor,
)
from .tools import (
    tool as tool,
)
from .tools.approvals import (
    ApprovalPolicy as ApprovalPolicy,
)
from .tools.approvals import (
    ApprovalRequest as ApprovalRequest,
)
from .tools.approvals import (
    Approvals as Approvals,
)
from .tools.approvals import (
    Approver as Approver,
)
from .tools.approvals import (
    is_read_only_command as is_read_only_command,
)
from .tools.builtin import builtin_tools as builtin_tools
