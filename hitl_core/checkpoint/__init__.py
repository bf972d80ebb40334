"""Checkpoint storage: the protocol and its backends.

InMemory, File and Sqlite need nothing beyond the standard library. Redis and Cosmos DB import
their SDKs only when their class is first used (``pip install hitl_core[redis]`` / ``[cosmos]``).
"""

from typing import TYPE_CHECKING, Any

from .base import CheckpointStorage, InvalidContinuationError
from .file import FileCheckpointStorage
from .memory import InMemoryCheckpointStorage
from .models import (
    AuditRecord,
    Decision,
    Delegation,
    Page,
    PendingRequest,
    PendingRequestEntry,
    SessionSummary,
    StoredCheckpoint,
    StoredDelegation,
    WorkflowCheckpoint,
)
from .sqlite import SqliteCheckpointStorage

if TYPE_CHECKING:
    from .cosmos import CosmosDBCheckpointStorage
    from .redis import RedisCheckpointStorage

_LAZY = {
    "RedisCheckpointStorage": (".redis", "RedisCheckpointStorage"),
    "CosmosDBCheckpointStorage": (".cosmos", "CosmosDBCheckpointStorage"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name, __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuditRecord",
    "CheckpointStorage",
    "CosmosDBCheckpointStorage",
    "Decision",
    "Delegation",
    "FileCheckpointStorage",
    "InMemoryCheckpointStorage",
    "InvalidContinuationError",
    "Page",
    "PendingRequest",
    "PendingRequestEntry",
    "RedisCheckpointStorage",
    "SessionSummary",
    "SqliteCheckpointStorage",
    "StoredCheckpoint",
    "StoredDelegation",
    "WorkflowCheckpoint",
]
