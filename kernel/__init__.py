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
    INITIAL_DELAY as INITIAL_DELAY,
    ContextWindowExceeded as ContextWindowExceeded,
    FatalError as FatalError,
    IncompleteResponse as IncompleteResponse,
    InvalidRequest as InvalidRequest,
    KernelError as KernelError,
    QuotaExceeded as QuotaExceeded,
    RateLimited as RateLimited,
    ServerError as ServerError,
    StreamError as StreamError,
    Unauthorized as Unauthorized,
    UsageLimitReached as UsageLimitReached,
    UsageNotIncluded as UsageNotIncluded,
    WireFormatError as WireFormatError,
    backoff as backoff,
)
from .events import (
    ContextWindowFull as ContextWindowFull,
    Event as Event,
    EventSink as EventSink,
    FallbackWarning as FallbackWarning,
    ItemCompleted as ItemCompleted,
    ItemStarted as ItemStarted,
    RateLimitsUpdated as RateLimitsUpdated,
    ReasoningDelta as ReasoningDelta,
    RequestSent as RequestSent,
    StreamRetry as StreamRetry,
    TextDelta as TextDelta,
    TokenUsageUpdated as TokenUsageUpdated,
    ToolCallFinished as ToolCallFinished,
    ToolCallStarted as ToolCallStarted,
    ToolInputDelta as ToolInputDelta,
    TurnAborted as TurnAborted,
    TurnCompleted as TurnCompleted,
    TurnFailed as TurnFailed,
    TurnStarted as TurnStarted,
    event_to_dict as event_to_dict,
)
from .items import (
    CustomToolCall as CustomToolCall,
    CustomToolCallOutput as CustomToolCallOutput,
    FreeformTool as FreeformTool,
    FreeformToolFormat as FreeformToolFormat,
    FunctionCall as FunctionCall,
    FunctionCallOutput as FunctionCallOutput,
    FunctionCallOutputPayload as FunctionCallOutputPayload,
    FunctionTool as FunctionTool,
    LocalShellCall as LocalShellCall,
    McpToolCallOutput as McpToolCallOutput,
    Message as Message,
    Reasoning as Reasoning,
    ResponseInputItem as ResponseInputItem,
    ResponseItem as ResponseItem,
    ToolSearchCall as ToolSearchCall,
    ToolSearchOutput as ToolSearchOutput,
    ToolSpec as ToolSpec,
    UnknownItem as UnknownItem,
    UnknownTool as UnknownTool,
    item_from_wire as item_from_wire,
    item_to_wire as item_to_wire,
    items_from_wire as items_from_wire,
    items_to_wire as items_to_wire,
    json_type_name as json_type_name,
    tool_from_wire as tool_from_wire,
    tool_to_wire as tool_to_wire,
)
from .prompt import (
    DEFAULT_BASE_INSTRUCTIONS as DEFAULT_BASE_INSTRUCTIONS,
    Prompt as Prompt,
    PromptConfig as PromptConfig,
    ToolConfig as ToolConfig,
    format_f32 as format_f32,
)
from .sampling import (
    PreparedSamplingRequest as PreparedSamplingRequest,
    SamplingHost as SamplingHost,
    SamplingRequestResult as SamplingRequestResult,
    run_sampling_request_loop as run_sampling_request_loop,
)
from .stream import (
    Completed as Completed,
    Created as Created,
    FallbackTransport as FallbackTransport,
    ModelClient as ModelClient,
    ModelEvent as ModelEvent,
    OutputItemAdded as OutputItemAdded,
    OutputItemDone as OutputItemDone,
    OutputTextDelta as OutputTextDelta,
    RateLimitsSnapshot as RateLimitsSnapshot,
    ReasoningContentDelta as ReasoningContentDelta,
    ReasoningSummaryDelta as ReasoningSummaryDelta,
    ReasoningSummaryPartAdded as ReasoningSummaryPartAdded,
    TokenUsage as TokenUsage,
    ToolCallInputDelta as ToolCallInputDelta,
    TransportUsed as TransportUsed,
)
from .tools import (
    CompletedResponseItem as CompletedResponseItem,
    FatalToolError as FatalToolError,
    RespondToModel as RespondToModel,
    ToolCall as ToolCall,
    ToolExecutor as ToolExecutor,
    execute_tool_call_with_default_output as execute_tool_call_with_default_output,
    response_input_to_response_item as response_input_to_response_item,
)
from .turn import (
    SHELL_TOOL_NAMES as SHELL_TOOL_NAMES,
    History as History,
    Turn as Turn,
    TurnHost as TurnHost,
    TurnOutcome as TurnOutcome,
    aborted_output_text as aborted_output_text,
    run_turn as run_turn,
)
