"""hitl_core: human-in-the-loop workflows that pause for people and resume exactly once.

Everything a workflow author needs is importable from here. Importing this package loads no
Azure SDK, redis client or azure.functions: those come with the backends that use them.
"""

from typing import TYPE_CHECKING, Any

from . import errors
from .checkpoint import (
    AuditRecord,
    CheckpointStorage,
    FileCheckpointStorage,
    InMemoryCheckpointStorage,
    SqliteCheckpointStorage,
    StoredCheckpoint,
    WorkflowCheckpoint,
)
from .errors import (
    CheckpointingNotConfiguredError,
    CheckpointTooLargeError,
    ConcurrencyError,
    HitlError,
    MisroutedRequestError,
    NotAuthorizedError,
    RequestAlreadyHandledError,
    ResponseValidationError,
    SerializationError,
    SessionClosedError,
    SessionConflictError,
    SessionNotFoundError,
    StorageUnavailableError,
    UnknownRequestError,
    WorkflowDefinitionError,
    WorkflowRunError,
)
from .serialization import register_type
from .workflow import (
    AgentRunResponse,
    AgentRunResponseUpdate,
    ApprovalPolicy,
    Approvers,
    ChatMessage,
    EscalationStep,
    Executor,
    FunctionCallContent,
    FunctionResultContent,
    RequestInfoEvent,
    RequestInfoExecutor,
    RequestInfoMessage,
    RequestResponse,
    Role,
    RunOptions,
    TextContent,
    Workflow,
    WorkflowAgent,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowEvent,
    WorkflowFailedEvent,
    WorkflowOutputEvent,
    WorkflowRunResult,
    WorkflowRunState,
    WorkflowStatusEvent,
    extract_request_info_calls,
    handler,
)

if TYPE_CHECKING:
    from .checkpoint.cosmos import CosmosDBCheckpointStorage
    from .checkpoint.redis import RedisCheckpointStorage


def __getattr__(name: str) -> Any:
    if name in ("RedisCheckpointStorage", "CosmosDBCheckpointStorage"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AgentRunResponse",
    "AgentRunResponseUpdate",
    "ApprovalPolicy",
    "Approvers",
    "AuditRecord",
    "ChatMessage",
    "CheckpointStorage",
    "CheckpointTooLargeError",
    "CheckpointingNotConfiguredError",
    "ConcurrencyError",
    "CosmosDBCheckpointStorage",
    "EscalationStep",
    "Executor",
    "FileCheckpointStorage",
    "FunctionCallContent",
    "FunctionResultContent",
    "HitlError",
    "InMemoryCheckpointStorage",
    "MisroutedRequestError",
    "NotAuthorizedError",
    "RedisCheckpointStorage",
    "RequestAlreadyHandledError",
    "RequestInfoEvent",
    "RequestInfoExecutor",
    "RequestInfoMessage",
    "RequestResponse",
    "ResponseValidationError",
    "Role",
    "RunOptions",
    "SerializationError",
    "SessionClosedError",
    "SessionConflictError",
    "SessionNotFoundError",
    "SqliteCheckpointStorage",
    "StorageUnavailableError",
    "StoredCheckpoint",
    "TextContent",
    "UnknownRequestError",
    "Workflow",
    "WorkflowAgent",
    "WorkflowBuilder",
    "WorkflowCheckpoint",
    "WorkflowContext",
    "WorkflowDefinitionError",
    "WorkflowEvent",
    "WorkflowFailedEvent",
    "WorkflowOutputEvent",
    "WorkflowRunError",
    "WorkflowRunResult",
    "WorkflowRunState",
    "WorkflowStatusEvent",
    "errors",
    "extract_request_info_calls",
    "handler",
    "register_type",
]
