"""The workflow engine: executors, the graph, typed human requests, and the agent bridge."""

from .agent import (
    AgentRunResponse,
    AgentRunResponseUpdate,
    ChatMessage,
    FunctionCallContent,
    FunctionResultContent,
    Role,
    TextContent,
    WorkflowAgent,
    extract_request_info_calls,
)
from .events import (
    ExecutorEvent,
    RequestInfoEvent,
    WorkflowEvent,
    WorkflowFailedEvent,
    WorkflowOutputEvent,
    WorkflowRunState,
    WorkflowStatusEvent,
)
from .executor import Executor, HandlerSpec, WorkflowContext, handler
from .policy import ApprovalPolicy, EscalationStep
from .request_info import Approvers, RequestInfoExecutor, RequestInfoMessage, RequestResponse
from .runner import RunOptions, SessionRunner
from .workflow import Edge, Workflow, WorkflowBuilder, WorkflowRunResult

__all__ = [
    "AgentRunResponse",
    "AgentRunResponseUpdate",
    "ApprovalPolicy",
    "Approvers",
    "ChatMessage",
    "Edge",
    "EscalationStep",
    "Executor",
    "ExecutorEvent",
    "FunctionCallContent",
    "FunctionResultContent",
    "HandlerSpec",
    "RequestInfoEvent",
    "RequestInfoExecutor",
    "RequestInfoMessage",
    "RequestResponse",
    "Role",
    "RunOptions",
    "SessionRunner",
    "TextContent",
    "Workflow",
    "WorkflowAgent",
    "WorkflowBuilder",
    "WorkflowContext",
    "WorkflowEvent",
    "WorkflowFailedEvent",
    "WorkflowOutputEvent",
    "WorkflowRunResult",
    "WorkflowRunState",
    "WorkflowStatusEvent",
    "extract_request_info_calls",
    "handler",
]
