"""The library surface named by the seed and ARCHITECTURE.md is importable from hitl_core."""

from __future__ import annotations

import hitl_core

SURFACE = """Executor handler WorkflowContext WorkflowBuilder Workflow RequestInfoExecutor RequestInfoMessage
RequestResponse RequestInfoEvent WorkflowOutputEvent WorkflowStatusEvent WorkflowFailedEvent WorkflowRunState
WorkflowAgent FunctionCallContent FunctionResultContent ChatMessage Role InMemoryCheckpointStorage
FileCheckpointStorage SqliteCheckpointStorage CheckpointStorage ConcurrencyError RequestAlreadyHandledError""".split()


def test_every_name_of_the_surface_is_exported() -> None:
    missing = [name for name in SURFACE if not hasattr(hitl_core, name)]
    assert missing == []
    assert set(SURFACE) <= set(hitl_core.__all__)


def test_agent_constants() -> None:
    assert hitl_core.WorkflowAgent.REQUEST_INFO_FUNCTION_NAME == "request_info"
    args = hitl_core.WorkflowAgent.RequestInfoFunctionArgs(request_id="r", data={"a": 1})
    assert args.to_dict()["request_id"] == "r"
    assert {s.name for s in hitl_core.WorkflowRunState} == {
        "IN_PROGRESS", "IDLE", "IDLE_WITH_PENDING_REQUESTS", "FAILED", "CANCELLED"
    }


def test_errors_derive_from_the_documented_bases() -> None:
    e = hitl_core.errors
    assert issubclass(e.UnknownRequestError, ValueError)
    assert issubclass(e.CheckpointingNotConfiguredError, ValueError)
    assert issubclass(e.ConcurrencyError, e.StorageError)
    for name in dir(e):
        obj = getattr(e, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == e.__name__:
            assert issubclass(obj, e.HitlError), name
