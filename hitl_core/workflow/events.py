"""Events a workflow run emits, in the seed's vocabulary."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class WorkflowRunState(enum.Enum):
    """Where a run stands when a status event is emitted."""

    IN_PROGRESS = "in_progress"
    IDLE = "idle"
    IDLE_WITH_PENDING_REQUESTS = "idle_with_pending_requests"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class WorkflowEvent:
    """Base class of every event; custom events added with ``ctx.add_event`` subclass it."""

    data: Any = None


@dataclass
class WorkflowStatusEvent(WorkflowEvent):
    state: WorkflowRunState = WorkflowRunState.IN_PROGRESS


@dataclass
class WorkflowOutputEvent(WorkflowEvent):
    """A value an executor yielded with ``ctx.yield_output``."""

    source_executor_id: str = ""


@dataclass
class WorkflowFailedEvent(WorkflowEvent):
    """The run failed; ``error`` is the exception, ``message`` its text."""

    error: BaseException | None = None
    executor_id: str | None = None

    @property
    def message(self) -> str:
        return str(self.error) if self.error is not None else ""


@dataclass
class RequestInfoEvent(WorkflowEvent):
    """A request is waiting for a person. ``data`` is the typed RequestInfoMessage."""

    request_id: str = ""
    source_executor_id: str = ""
    request_type: type | None = None
    response_type: type | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutorEvent(WorkflowEvent):
    """An executor-level event (invoked / completed), useful for tracing."""

    executor_id: str = ""
