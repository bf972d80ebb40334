"""Microsoft Agent Framework on hitl: host AF workflows and tool approvals on the service
(:mod:`.hosting`), and AF checkpoint storages on hitl's backends (:mod:`.checkpoint_storage`).

Needs the optional extra ``hitl_core[agent-framework]`` (``agent-framework-core``, pinned exactly);
nothing else in hitl_core imports this package.
"""

from .checkpoint_storage import (
    CheckpointConflictError,
    CosmosAgentCheckpointStorage,
    RedisAgentCheckpointStorage,
    SqliteAgentCheckpointStorage,
    StaleCheckpointError,
    abort_on_stale_checkpoint,
)
from .hosting import (
    AgentFrameworkHost,
    AgentFrameworkRequest,
    AgentFrameworkStart,
    HostedWorkflow,
    HumanStep,
    ToolApproval,
    agent_framework_workflow,
)

__all__ = [
    "AgentFrameworkHost",
    "AgentFrameworkRequest",
    "AgentFrameworkStart",
    "CheckpointConflictError",
    "CosmosAgentCheckpointStorage",
    "HostedWorkflow",
    "HumanStep",
    "RedisAgentCheckpointStorage",
    "SqliteAgentCheckpointStorage",
    "StaleCheckpointError",
    "ToolApproval",
    "abort_on_stale_checkpoint",
    "agent_framework_workflow",
]
