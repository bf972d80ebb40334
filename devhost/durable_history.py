"""The Durable wire formats the local runtime speaks: history events in, orchestrator actions out.

Why a module of its own: these shapes are the contract with the real ``azure-functions-durable``
SDK, not ours to choose. The SDK's orchestrator handle reads the host's context JSON (a
``history`` array of PascalCase events as DurableTask.Core serialises them: ``EventType`` as an
integer, ``EventId``, ``IsPlayed``, ``Timestamp``, plus per-type fields such as ``Name``,
``Input``, ``Result``, ``TaskScheduledId``, ``TimerId``, ``FireAt``) and answers with an
orchestrator state (``isDone``, ``actions``, ``output``, ``error``, ``customStatus``,
``schemaVersion``). Keeping builders and the action model here makes the episode logic in
:mod:`devhost.durable` read like the Durable extension's own shim.

Payloads (``Input``, ``Result``) are JSON *text*, exactly as on the real host: the SDK decodes
them with ``df_loads``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Event = dict[str, Any]
"""One history event as the SDK reads it (PascalCase keys, JSON-ready values)."""

OUT_OF_PROC_MARKER = "$OutOfProcData$:"
"""Separator the SDK puts between an orchestrator's error text and its state JSON."""


class EventType(IntEnum):
    """DurableTask.Core's ``EventType`` numbers (the SDK's ``HistoryEventType``)."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_INSTANCE_CREATED = 7
    SUB_ORCHESTRATION_INSTANCE_COMPLETED = 8
    SUB_ORCHESTRATION_INSTANCE_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16


class ActionType(IntEnum):
    """The out-of-process action numbers (the extension's ``AsyncActionType``)."""

    CALL_ACTIVITY = 0
    CALL_ACTIVITY_WITH_RETRY = 1
    CALL_SUB_ORCHESTRATOR = 2
    CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
    CONTINUE_AS_NEW = 4
    CREATE_TIMER = 5
    WAIT_FOR_EXTERNAL_EVENT = 6
    CALL_ENTITY = 7
    CALL_HTTP = 8
    SIGNAL_ENTITY = 9
    SCHEDULED_SIGNAL_ENTITY = 10
    WHEN_ANY = 11
    WHEN_ALL = 12


# Actions that take a sequence number (an ``EventId``) when DurableTask.Core schedules them; the
# SDK numbers its tasks the same way, which is how a completion finds its task on replay.
# WaitForExternalEvent is keyed by name and the compound actions only group their children.
ID_CONSUMING_ACTIONS = frozenset(
    {
        ActionType.CALL_ACTIVITY,
        ActionType.CALL_ACTIVITY_WITH_RETRY,
        ActionType.CALL_SUB_ORCHESTRATOR,
        ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY,
        ActionType.CONTINUE_AS_NEW,
        ActionType.CREATE_TIMER,
        ActionType.CALL_ENTITY,
        ActionType.CALL_HTTP,
        ActionType.SIGNAL_ENTITY,
        ActionType.SCHEDULED_SIGNAL_ENTITY,
    }
)


def utc_now() -> datetime:
    """The default clock: timezone-aware UTC wall time."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Format like the Durable host (UTC, microseconds, ``Z``) so ``dateutil`` and the SDK agree."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Parse a timestamp written by :func:`iso` or by the SDK (always aware, UTC)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def event(kind: EventType, at: datetime, *, event_id: int = -1, **fields: Any) -> Event:
    """Build one history event; ``IsPlayed`` is added per replay by the runtime."""
    return {"EventType": int(kind), "EventId": event_id, "Timestamp": iso(at), **fields}


class RetryOptionsModel(BaseModel):
    """``retryOptions`` of a ``CallActivityWithRetry`` action (the SDK sends these two only)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    first_retry_interval_ms: int = Field(alias="firstRetryIntervalInMilliseconds", gt=0)
    max_number_of_attempts: int = Field(alias="maxNumberOfAttempts", ge=1)


class ActionModel(BaseModel):
    """One out-of-process action; compound actions (WhenAny/WhenAll) nest their children."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    action_type: int = Field(alias="actionType")
    function_name: str | None = Field(default=None, alias="functionName")
    input: Any = None
    compound_actions: list[ActionModel] = Field(default_factory=list, alias="compoundActions")
    fire_at: datetime | None = Field(default=None, alias="fireAt")
    is_canceled: bool = Field(default=False, alias="isCanceled")
    external_event_name: str | None = Field(default=None, alias="externalEventName")
    retry_options: RetryOptionsModel | None = Field(default=None, alias="retryOptions")
    instance_id: str | None = Field(default=None, alias="instanceId")
    version: str | None = None

    @property
    def kind_name(self) -> str:
        """A readable action name for error messages."""
        try:
            return ActionType(self.action_type).name
        except ValueError:
            return f"action type {self.action_type}"


class OrchestratorStateModel(BaseModel):
    """What the SDK's orchestrator handle returns (or embeds after ``$OutOfProcData$:``)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    is_done: bool = Field(default=False, alias="isDone")
    schema_version: int = Field(default=0, alias="schemaVersion")
    actions: list[list[ActionModel]] = Field(default_factory=list)
    output: Any = None
    error: str | None = None
    custom_status: Any = Field(default=None, alias="customStatus")

    def top_level_actions(self) -> list[ActionModel]:
        """The append-only list of yielded actions, one per ``yield`` (replay schema V2+).

        With schema V2 the SDK sends a single inner list; concatenating keeps a V1 payload
        readable too (V1 is never requested by this runtime).
        """
        return [action for group in self.actions for action in group]


def walk_atomic(action: ActionModel, path: str) -> Iterator[tuple[str, ActionModel]]:
    """Depth-first atomic actions with a stable path (``"3"``, ``"3.1"``...).

    Depth-first is the order in which both the SDK (``_add_to_open_tasks``) and the extension's
    shim (``InvokeAPIFromAction``) hand out sequence numbers to the children of a compound.
    """
    if action.action_type in (ActionType.WHEN_ANY, ActionType.WHEN_ALL):
        for index, child in enumerate(action.compound_actions):
            yield from walk_atomic(child, f"{path}.{index}")
    else:
        yield path, action
