"""trio-agent-kernel's I/O-free core: the agent loop as a library.

Layout: the work lives in small modules — ``items`` (the conversation data model and its wire
codec), ``prompt`` (prompts and their re-serialisation), ``errors`` (the error tree and backoff),
``stream`` (decoded model events and the transport protocol), ``tools`` (the tool contract),
``sampling`` (the retryable sampling loop), ``turn`` (the default single request and the turn
supervisor) and ``events`` (what a UI observes). This file re-exports every public name once;
import from ``kernel``. ``kernel.testing`` (Hypothesis strategies and an in-memory scripted host)
is a public corner of its own and needs the ``test`` extra.

Depends on trio and attrs only: no I/O here.
"""

from .errors import (
    BACKOFF_FACTOR as BACKOFF_FACTOR,
)
from .errors import (
    INITIAL_DELAY as INITIAL_DELAY,
)
from .errors import (
    ContextWindowExceeded as ContextWindowExceeded,
)
from .errors import (
    FatalError as FatalError,
)
from .errors import (
    IncompleteResponse as IncompleteResponse,
)
from .errors import (
    InvalidRequest as InvalidRequest,
)
from .errors import (
    KernelError as KernelError,
)
from .errors import (
    QuotaExceeded as QuotaExceeded,
)
from .errors import (
    RateLimited as RateLimited,
)
from .errors import (
    ServerError as ServerError,
)
from .errors import (
    StreamError as StreamError,
)
from .errors import (
    Unauthorized as Unauthorized,
)
from .errors import (
    UsageLimitReached as UsageLimitReached,
)
from .errors import (
    UsageNotIncluded as UsageNotIncluded,
)
from .errors import (
    WireFormatError as WireFormatError,
)
from .errors import (
    backoff as backoff,
)
from .events import (
    ContextWindowFull as ContextWindowFull,
)
from .events import (
    Event as Event,
)
from .events import (
    EventSink as EventSink,
)
from .events import (
    FallbackWarning as FallbackWarning,
)
from .events import (
    ItemCompleted as ItemCompleted,
)
from .events import (
    ItemStarted as ItemStarted,
)
from .events import (
    RateLimitsUpdated as RateLimitsUpdated,
)
from .events import (
    ReasoningDelta as ReasoningDelta,
)
from .events import (
    StreamRetry as StreamRetry,
)
from .events import (
    TextDelta as TextDelta,
)
from .events import (
    TokenUsageUpdated as TokenUsageUpdated,
)
from .events import (
    ToolCallFinished as ToolCallFinished,
)
from .events import (
    ToolCallStarted as ToolCallStarted,
)
from .events import (
    ToolInputDelta as ToolInputDelta,
)
from .events import (
    TurnAborted as TurnAborted,
)
from .events import (
    TurnCompleted as TurnCompleted,
)
from .events import (
    TurnFailed as TurnFailed,
)
from .events import (
    TurnStarted as TurnStarted,
)
from .events import (
    event_to_dict as event_to_dict,
)
from .items import (
    CustomToolCall as CustomToolCall,
)
from .items import (
    CustomToolCallOutput as CustomToolCallOutput,
)
from .items import (
    FreeformTool as FreeformTool,
)
from .items import (
    FreeformToolFormat as FreeformToolFormat,
)
from .items import (
    FunctionCall as FunctionCall,
)
from .items import (
    FunctionCallOutput as FunctionCallOutput,
)
from .items import (
    FunctionCallOutputPayload as FunctionCallOutputPayload,
)
from .items import (
    FunctionTool as FunctionTool,
)
from .items import (
    LocalShellCall as LocalShellCall,
)
from .items import (
    McpToolCallOutput as McpToolCallOutput,
)
from .items import (
    Message as Message,
)
from .items import (
    Reasoning as Reasoning,
)
from .items import (
    ResponseInputItem as ResponseInputItem,
)
from .items import (
    ResponseItem as ResponseItem,
)
from .items import (
    ToolSearchCall as ToolSearchCall,
)
from .items import (
    ToolSearchOutput as ToolSearchOutput,
)
from .items import (
    ToolSpec as ToolSpec,
)
from .items import (
    UnknownItem as UnknownItem,
)
from .items import (
    UnknownTool as UnknownTool,
)
from .items import (
    item_from_wire as item_from_wire,
)
from .items import (
    item_to_wire as item_to_wire,
)
from .items import (
    items_from_wire as items_from_wire,
)
from .items import (
    items_to_wire as items_to_wire,
)
from .items import (
    tool_from_wire as tool_from_wire,
)
from .items import (
    tool_to_wire as tool_to_wire,
)
from .prompt import (
    DEFAULT_BASE_INSTRUCTIONS as DEFAULT_BASE_INSTRUCTIONS,
)
from .prompt import (
    Prompt as Prompt,
)
from .prompt import (
    PromptConfig as PromptConfig,
)
from .prompt import (
    ToolConfig as ToolConfig,
)
from .prompt import (
    format_f32 as format_f32,
)
from .sampling import (
    PreparedSamplingRequest as PreparedSamplingRequest,
)
from .sampling import (
    SamplingHost as SamplingHost,
)
from .sampling import (
    SamplingRequestResult as SamplingRequestResult,
)
from .sampling import (
    run_sampling_request_loop as run_sampling_request_loop,
)
from .stream import (
    Completed as Completed,
)
from .stream import (
    Created as Created,
)
from .stream import (
    FallbackTransport as FallbackTransport,
)
from .stream import (
    ModelClient as ModelClient,
)
from .stream import (
    ModelEvent as ModelEvent,
)
from .stream import (
    OutputItemAdded as OutputItemAdded,
)
from .stream import (
    OutputItemDone as OutputItemDone,
)
from .stream import (
    OutputTextDelta as OutputTextDelta,
)
from .stream import (
    RateLimitsSnapshot as RateLimitsSnapshot,
)
from .stream import (
    ReasoningContentDelta as ReasoningContentDelta,
)
from .stream import (
    ReasoningSummaryDelta as ReasoningSummaryDelta,
)
from .stream import (
    ReasoningSummaryPartAdded as ReasoningSummaryPartAdded,
)
from .stream import (
    TokenUsage as TokenUsage,
)
from .stream import (
    ToolCallInputDelta as ToolCallInputDelta,
)
from .tools import (
    CompletedResponseItem as CompletedResponseItem,
)
from .tools import (
    FatalToolError as FatalToolError,
)
from .tools import (
    RespondToModel as RespondToModel,
)
from .tools import (
    ToolCall as ToolCall,
)
from .tools import (
    ToolExecutor as ToolExecutor,
)
from .tools import (
    execute_tool_call_with_default_output as execute_tool_call_with_default_output,
)
from .tools import (
    response_input_to_response_item as response_input_to_response_item,
)
from .turn import (
    SHELL_TOOL_NAMES as SHELL_TOOL_NAMES,
)
from .turn import (
    History as History,
)
from .turn import (
    Turn as Turn,
)
from .turn import (
    TurnHost as TurnHost,
)
from .turn import (
    TurnOutcome as TurnOutcome,
)
from .turn import (
    aborted_output_text as aborted_output_text,
)
from .turn import (
    run_turn as run_turn,
)
