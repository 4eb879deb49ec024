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
    KernelError as KernelError,
    StreamError as StreamError,
    ServerError as ServerError,
    RateLimited as RateLimited,
    UsageLimitReached as UsageLimitReached,
    ContextWindowExceeded as ContextWindowExceeded,
    QuotaExceeded as QuotaExceeded,
    UsageNotIncluded as UsageNotIncluded,
    InvalidRequest as InvalidRequest,
    Unauthorized as Unauthorized,
    IncompleteResponse as IncompleteResponse,
    FatalError as FatalError,
    WireFormatError as WireFormatError,
    backoff as backoff,
    INITIAL_DELAY as INITIAL_DELAY,
    BACKOFF_FACTOR as BACKOFF_FACTOR,
)
from .items import (
    Message as Message,
    Reasoning as Reasoning,
    FunctionCall as FunctionCall,
    FunctionCallOutput as FunctionCallOutput,
    FunctionCallOutputPayload as FunctionCallOutputPayload,
    CustomToolCall as CustomToolCall,
    CustomToolCallOutput as CustomToolCallOutput,
    LocalShellCall as LocalShellCall,
    ToolSearchCall as ToolSearchCall,
    ToolSearchOutput as ToolSearchOutput,
    McpToolCallOutput as McpToolCallOutput,
    UnknownItem as UnknownItem,
    ResponseItem as ResponseItem,
    ResponseInputItem as ResponseInputItem,
    item_from_wire as item_from_wire,
    item_to_wire as item_to_wire,
    items_from_wire as items_from_wire,
    items_to_wire as items_to_wire,
    FunctionTool as FunctionTool,
    FreeformTool as FreeformTool,
    FreeformToolFormat as FreeformToolFormat,
    UnknownTool as UnknownTool,
    ToolSpec as ToolSpec,
    tool_from_wire as tool_from_wire,
    tool_to_wire as tool_to_wire,
)
from .prompt import (
    Prompt as Prompt,
    PromptConfig as PromptConfig,
    ToolConfig as ToolConfig,
    DEFAULT_BASE_INSTRUCTIONS as DEFAULT_BASE_INSTRUCTIONS,
    format_f32 as format_f32,
)
from .stream import (
    Created as Created,
    OutputItemAdded as OutputItemAdded,
    OutputItemDone as OutputItemDone,
    OutputTextDelta as OutputTextDelta,
    ReasoningSummaryDelta as ReasoningSummaryDelta,
    ReasoningSummaryPartAdded as ReasoningSummaryPartAdded,
    ReasoningContentDelta as ReasoningContentDelta,
    ToolCallInputDelta as ToolCallInputDelta,
    RateLimitsSnapshot as RateLimitsSnapshot,
    Completed as Completed,
    TokenUsage as TokenUsage,
    ModelEvent as ModelEvent,
    ModelClient as ModelClient,
    FallbackTransport as FallbackTransport,
)
from .tools import (
    ToolCall as ToolCall,
    ToolExecutor as ToolExecutor,
    RespondToModel as RespondToModel,
    FatalToolError as FatalToolError,
    CompletedResponseItem as CompletedResponseItem,
    execute_tool_call_with_default_output as execute_tool_call_with_default_output,
    response_input_to_response_item as response_input_to_response_item,
)
from .sampling import (
    SamplingHost as SamplingHost,
    PreparedSamplingRequest as PreparedSamplingRequest,
    SamplingRequestResult as SamplingRequestResult,
    run_sampling_request_loop as run_sampling_request_loop,
)
from .events import (
    TurnStarted as TurnStarted,
    TextDelta as TextDelta,
    ReasoningDelta as ReasoningDelta,
    ToolInputDelta as ToolInputDelta,
    ItemStarted as ItemStarted,
    ItemCompleted as ItemCompleted,
    ToolCallStarted as ToolCallStarted,
    ToolCallFinished as ToolCallFinished,
    StreamRetry as StreamRetry,
    FallbackWarning as FallbackWarning,
    TokenUsageUpdated as TokenUsageUpdated,
    RateLimitsUpdated as RateLimitsUpdated,
    ContextWindowFull as ContextWindowFull,
    TurnCompleted as TurnCompleted,
    TurnAborted as TurnAborted,
    TurnFailed as TurnFailed,
    Event as Event,
    EventSink as EventSink,
    event_to_dict as event_to_dict,
)
from .turn import (
    History as History,
    TurnHost as TurnHost,
    Turn as Turn,
    TurnOutcome as TurnOutcome,
    run_turn as run_turn,
    aborted_output_text as aborted_output_text,
    SHELL_TOOL_NAMES as SHELL_TOOL_NAMES,
)
