"""A local Durable Functions runtime: the real orchestrator code, driven like the Durable host does.

Why: Core Tools and the .NET Durable extension do not run on these machines, yet the project's
orchestrators (``df.DFApp`` / ``df.Blueprint``, Python v2 model) must run end to end in dev and
tests, with the *real* ``azure-functions-durable`` SDK: replay, determinism rules, task
composition and the HTTP client all stay the SDK's. This module plays the part of the extension:

* **Discovery** - from ``app.get_functions()`` (or the list the host already obtained: the call
  may only happen once per app object) it keeps the functions with an ``orchestrationTrigger``
  (their user function is the SDK's handle: context JSON in, orchestrator-state JSON out), an
  ``activityTrigger`` (the user's own function) and a ``durableClient`` input binding.
* **Episodes** - each new event (ExecutionStarted, TaskCompleted/TaskFailed, TimerFired,
  EventRaised, SubOrchestrationInstanceCompleted/Failed) is appended to the instance's history
  after an ``OrchestratorStarted``; the handle replays the whole history and answers with the
  append-only action list; new actions get DurableTask.Core sequence numbers (depth-first
  through WhenAny/WhenAll, in yield order, exactly as the extension's
  ``OutOfProcOrchestrationShim`` would schedule them) and become TaskScheduled / TimerCreated /
  SubOrchestrationInstanceCreated events; ``OrchestratorCompleted`` closes the episode. One new
  event per episode, so the SDK and the runtime always agree on the numbering of retry timers.
* **Work** - activities run on the event loop (async functions) or in a worker thread (sync
  functions, as the Python worker does); timers are real ``loop.call_later`` timers armed from
  the persisted ``fireAt``; raised events are appended even when nobody waits yet (the SDK
  buffers them until ``wait_for_external_event`` asks, as Durable does).
* **Persistence** - :class:`~devhost.durable_store.DurableStore` (SQLite) commits the
  history, the not-yet-replayed inbox and the timers of an episode in one transaction. ``await
  runtime.start()`` resumes every non-terminal instance: timers re-armed (overdue ones fire at
  once), activities without a completion run again (at-least-once, like Durable), inbox drained.
* **Client API** - :mod:`devhost.durable_webhooks` serves the extension's HTTP API
  (``/runtime/webhooks/durabletask/...``) that ``DurableOrchestrationClient`` calls through the
  ``rpcBaseUrl`` of :meth:`LocalDurableRuntime.client_binding_json`.

Mounting (what the devhost server does)::

    functions = app.get_functions()                       # once per app object
    runtime = LocalDurableRuntime(functions, store_path=data_dir / "durable.db",
                                  base_url="http://127.0.0.1:7071")
    web_app.add_subapp(DURABLE_WEBHOOK_PREFIX, runtime.webhook_app())
    await runtime.start()                                 # after the server knows its port:
    runtime.base_url = f"http://127.0.0.1:{port}"         # (or pass it up front)
    ...
    # calling a function that declares @app.durable_client_input(client_name="client"):
    kwargs.update(runtime.binding_kwargs(function))       # {"client": runtime.client_binding_json()}
    ...
    await runtime.stop(); await reset_durable_sdk_session()

The webhook routes must not go through the host's ``/api`` request checks (content type, problem
JSON): the SDK posts bodiless requests (terminate) and JSON-encoded strings.

Supported: CallActivity, CallActivityWithRetry (fixed interval, as the SDK's RetryOptions),
CreateTimer (with cancellation), WaitForExternalEvent (events raised before the wait are kept),
WhenAny/WhenAll (nested), CallSubOrchestrator, ContinueAsNew (raised events not yet replayed are
carried over), custom status, terminate (children keep running, as in Durable), purge of
terminal instances, status queries. Starting an id that is Pending/Running is refused
(:class:`InstanceAlreadyExistsError`, 409); a terminal one is replaced. Activities are
at-least-once across restarts. Not supported (the orchestration fails with a clear message):
entities (CallEntity/SignalEntity), CallHttp, CallSubOrchestratorWithRetry; the
suspend/resume/rewind/restart webhooks answer 501. One task hub, no ``code`` keys.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import traceback
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from hitl_core.errors import HitlError

from .durable_history import (
    ID_CONSUMING_ACTIONS,
    OUT_OF_PROC_MARKER,
    ActionType,
    Event,
    EventType,
    OrchestratorStateModel,
    event,
    iso,
    utc_now,
    walk_atomic,
)
from .durable_store import DurableStore, InstanceRecord, Progress, RetryState, StoredTimer

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "DURABLE_CLIENT",
    "DURABLE_TRIGGER_TYPES",
    "DURABLE_WEBHOOK_PREFIX",
    "DurableRuntimeError",
    "InstanceAlreadyExistsError",
    "InstanceCompletedError",
    "InstanceNotFoundError",
    "LocalDurableRuntime",
    "OrchestrationStatus",
    "OrchestratorNotFoundError",
    "reset_durable_sdk_session",
]

logger = logging.getLogger(__name__)

DURABLE_WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"
"""Where the host mounts :meth:`LocalDurableRuntime.webhook_app` (the extension's own path)."""

ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"
ENTITY_TRIGGER = "entityTrigger"
DURABLE_CLIENT = "durableClient"
DURABLE_TRIGGER_TYPES = frozenset({ORCHESTRATION_TRIGGER, ACTIVITY_TRIGGER, ENTITY_TRIGGER})
"""Trigger types the Durable runtime invokes; the HTTP host must not serve these itself."""

_REPLAY_SCHEMA_V2 = 1  # the SDK's ReplaySchema.V2: one flat action list, compound actions nested
_SUPPORTED_ACTIONS = frozenset(
    {
        ActionType.CALL_ACTIVITY,
        ActionType.CALL_ACTIVITY_WITH_RETRY,
        ActionType.CALL_SUB_ORCHESTRATOR,
        ActionType.CONTINUE_AS_NEW,
        ActionType.CREATE_TIMER,
        ActionType.WAIT_FOR_EXTERNAL_EVENT,
    }
)


# -- errors -------------------------------------------------------------------------------


class DurableRuntimeError(HitlError):
    """Base of the local Durable runtime's errors (the webhooks map them to HTTP statuses)."""


class OrchestratorNotFoundError(DurableRuntimeError, LookupError):
    """No orchestrator function of that name (webhook: 400 with ``ExceptionMessage``, as Durable)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function.")
        self.name = name


class InstanceNotFoundError(DurableRuntimeError, LookupError):
    """No instance with that id (webhook: 404)."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"No instance with ID '{instance_id}' found.")
        self.instance_id = instance_id


class InstanceCompletedError(DurableRuntimeError):
    """The instance already completed, failed or was terminated (webhook: 410 Gone)."""

    def __init__(self, instance_id: str, status: str) -> None:
        super().__init__(f"Instance with ID '{instance_id}' is gone: it is {status}.")
        self.instance_id = instance_id
        self.status = status


class InstanceAlreadyExistsError(DurableRuntimeError):
    """start_new with the id of a Pending/Running instance (webhook: 409 Conflict).

    Durable's default (``overridableExistingInstanceStates: NonRunningStates``) refuses to
    replace a running instance; a completed, failed or terminated one is replaced.
    """

    def __init__(self, instance_id: str, status: str) -> None:
        super().__init__(f"An orchestration instance with the ID '{instance_id}' already exists and is {status}.")
        self.instance_id = instance_id
        self.status = status


# -- discovery ----------------------------------------------------------------------------


class FunctionLike(Protocol):
    """What the runtime needs from an ``azure.functions`` ``Function`` (from ``get_functions()``)."""

    def get_function_name(self) -> str | None: ...

    def get_trigger(self) -> Any: ...

    def get_bindings(self) -> list[Any]: ...

    def get_user_function(self) -> Callable[..., Any]: ...


@dataclass(frozen=True)
class _Registered:
    """A discovered orchestrator or activity: the callable the worker would invoke."""

    name: str
    func: Callable[..., Any]
    trigger_param: str
    client_params: tuple[str, ...]


@dataclass
class OrchestrationStatus:
    """What ``get_status`` reports; :meth:`to_json` is the extension's status JSON."""

    name: str
    instance_id: str
    runtime_status: str
    created_time: datetime
    last_updated_time: datetime
    input: Any = None
    output: Any = None
    custom_status: Any = None
    history: list[Event] | None = None

    def to_json(self, *, show_input: bool = True) -> dict[str, Any]:
        """camelCase keys, ISO times and parsed payloads, as ``DurableOrchestrationStatus`` reads."""
        doc: dict[str, Any] = {
            "name": self.name,
            "instanceId": self.instance_id,
            "runtimeStatus": self.runtime_status,
            "input": self.input if show_input else None,
            "customStatus": self.custom_status,
            "output": self.output,
            "createdTime": iso(self.created_time),
            "lastUpdatedTime": iso(self.last_updated_time),
        }
        if self.history is not None:
            doc["historyEvents"] = self.history
            doc["history"] = self.history
        return doc


@dataclass
class _Plan:
    """Side effects of one episode, started only after the episode is committed."""

    add_timers: list[tuple[int, datetime]] = field(default_factory=list)
    drop_timers: list[int] = field(default_factory=list)
    activities: list[tuple[int, str, str | None]] = field(default_factory=list)
    children: list[tuple[int, str, str, str | None, str]] = field(default_factory=list)


class _UnsupportedActionError(Exception):
    pass


def _codec() -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    """The worker's own serializers, so activity payloads round-trip exactly as on Azure.

    Activity inputs are decoded with ``df_loads(text, expected_type=object)``. The worker's
    ``ActivityTriggerConverter`` accepts any annotation and does not forward it to ``df_loads``,
    so an activity input is only ever validated as "any JSON value" - which ``object`` states
    explicitly. The result is the untyped call's in both modes (loose: the ``object_hook``
    pipeline; strict, ``AZURE_FUNCTIONS_DURABLE_STRICT_TYPING=1``: plain JSON, ``TypeError``
    for a top-level custom-object envelope; loose mode also logs that such an envelope is not an
    ``object``), without the SDK's "df_loads was called without expected_type"
    ``DeprecationWarning``. Passing the parameter's annotation instead would let
    the devhost decode (or refuse) payloads that the worker in Azure treats differently.
    """
    from azure.functions._durable_functions import df_dumps, df_loads

    def loads(text: str) -> Any:
        return df_loads(text, expected_type=object)

    return df_dumps, loads


def _json_or_none(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def serialized_payload(value: Any) -> str | None:
    """Normalise a webhook body value to the JSON text the history stores.

    The Python SDK double-encodes: ``start_new``/``raise_event`` post ``json=df_dumps(value)``,
    i.e. a JSON *string* holding the serialised payload. A string that parses as JSON is taken
    as such pre-serialised text; any other value (a raw object from curl, a plain string) is
    serialised here, so ``df_loads`` in the orchestrator always gets valid JSON.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return json.dumps(value)
        return value
    return json.dumps(value)


# -- the runtime --------------------------------------------------------------------------


class LocalDurableRuntime:
    """Runs an app's orchestrators and activities with history, timers, events and persistence.

    ``functions`` is the list ``app.get_functions()`` returned (preferred: the host calls it
    once and shares it) or the app object itself (then this constructor calls it). Nothing
    opens a socket: the host serves :meth:`webhook_app` on its own (127.0.0.1) server.
    """

    def __init__(
        self,
        functions: Sequence[FunctionLike] | Any,
        *,
        store_path: Path,
        base_url: str = "http://127.0.0.1:7071",
        task_hub: str = "LocalTaskHub",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        found: list[FunctionLike] = (
            list(functions.get_functions()) if hasattr(functions, "get_functions") else list(functions)
        )
        self.base_url = base_url.rstrip("/")
        self.task_hub = task_hub
        self._clock = clock or utc_now
        self._store = DurableStore(store_path)
        self._orchestrators: dict[str, _Registered] = {}
        self._activities: dict[str, _Registered] = {}
        self._client_params: dict[str, tuple[str, ...]] = {}
        self._discover(found)
        self._running = False
        self._timer_handles: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._activity_tasks: set[asyncio.Task[None]] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._dumps, self._loads = _codec()

    # -- discovery ------------------------------------------------------------------------

    def _discover(self, functions: Sequence[FunctionLike]) -> None:
        for function in functions:
            user_function = function.get_user_function()
            name = function.get_function_name() or user_function.__name__
            clients = tuple(
                str(binding.name)
                for binding in function.get_bindings()
                if getattr(binding, "type", None) == DURABLE_CLIENT
            )
            if clients:
                self._client_params[name] = clients
            trigger = function.get_trigger()
            trigger_type = getattr(trigger, "type", None)
            if trigger_type == ORCHESTRATION_TRIGGER:
                table, declared = self._orchestrators, getattr(trigger, "orchestration", None)
            elif trigger_type == ACTIVITY_TRIGGER:
                table, declared = self._activities, getattr(trigger, "activity", None)
            else:
                continue
            registered = _Registered(declared or name, user_function, str(trigger.name), clients)
            table[registered.name] = registered
            # The SDK names a FunctionBuilder passed to call_activity by its Python name.
            table.setdefault(getattr(user_function, "__name__", registered.name), registered)

    @property
    def orchestrator_names(self) -> list[str]:
        """Orchestrator functions found (by their Durable name)."""
        return sorted({r.name for r in self._orchestrators.values()})

    @property
    def activity_names(self) -> list[str]:
        """Activity functions found (by their Durable name)."""
        return sorted({r.name for r in self._activities.values()})

    @property
    def client_function_names(self) -> list[str]:
        """Functions that declare a ``durableClient`` input binding."""
        return sorted(self._client_params)

    def binding_kwargs(self, function: FunctionLike | str) -> dict[str, str]:
        """The keyword arguments a function's ``durableClient`` bindings need (may be empty).

        The host merges these into the call of any function (HTTP, Event Grid, timer...) that
        declares ``@app.durable_client_input``; the SDK's wrapper turns the JSON string into a
        ``DurableOrchestrationClient``.
        """
        if isinstance(function, str):
            params = self._client_params.get(function, ())
        else:
            params = tuple(str(b.name) for b in function.get_bindings() if getattr(b, "type", None) == DURABLE_CLIENT)
        if not params:
            return {}
        starter = self.client_binding_json()
        return dict.fromkeys(params, starter)

    def client_binding_json(self, base_url: str | None = None) -> str:
        """The ``durableClient`` binding value ("starter" JSON) the Durable host would pass.

        ``DurableOrchestrationClient(starter)`` reads ``rpcBaseUrl`` for every call (start,
        raise event, status, terminate, purge) and ``managementUrls`` for
        ``create_check_status_response``; both point at :data:`DURABLE_WEBHOOK_PREFIX`.
        """
        hook = f"{(base_url or self.base_url).rstrip('/')}{DURABLE_WEBHOOK_PREFIX}"
        query = f"taskHub={quote(self.task_hub)}&connection=Storage"
        instance = f"{hook}/instances/INSTANCEID"
        starter = {
            "taskHubName": self.task_hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{hook}/orchestrators/{{functionName}}[/{{instanceId}}]?{query}",
                "createAndWaitOnNewInstancePostUri": (
                    f"{hook}/orchestrators/{{functionName}}[/{{instanceId}}]"
                    f"?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{query}"
                ),
            },
            "managementUrls": self._management_urls(hook, "INSTANCEID", query, instance),
            "baseUrl": hook,
            "requiredQueryStringParameters": query,
            "rpcBaseUrl": f"{hook}/",
            "httpBaseUrl": "",
        }
        return json.dumps(starter)

    def management_payload(self, instance_id: str, base_url: str | None = None) -> dict[str, str]:
        """The body of a 202 answer to a start request (the check-status links)."""
        hook = f"{(base_url or self.base_url).rstrip('/')}{DURABLE_WEBHOOK_PREFIX}"
        query = f"taskHub={quote(self.task_hub)}&connection=Storage"
        instance = f"{hook}/instances/{quote(instance_id, safe='')}"
        return self._management_urls(hook, instance_id, query, instance)

    @staticmethod
    def _management_urls(hook: str, instance_id: str, query: str, instance: str) -> dict[str, str]:
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{instance}?{query}",
            "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{instance}?{query}",
            "restartPostUri": f"{instance}/restart?{query}",
            "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
        }

    def webhook_app(self) -> web.Application:
        """An aiohttp sub-application to mount at :data:`DURABLE_WEBHOOK_PREFIX`."""
        from .durable_webhooks import create_webhook_app

        return create_webhook_app(self)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and resume every non-terminal instance; idempotent."""
        if self._running:
            return
        self._store.open()
        self._running = True
        for instance_id in self._store.non_terminal_ids():
            self._resume(instance_id)

    async def stop(self) -> None:
        """Cancel timers, workers and running activities; close the store. State stays on disk."""
        if not self._running:
            self._store.close()
            return
        self._running = False
        for handle in self._timer_handles.values():
            handle.cancel()
        self._timer_handles.clear()
        tasks: list[asyncio.Task[Any]] = [*self._workers.values(), *self._activity_tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._activity_tasks.clear()
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._waiters.clear()
        self._store.close()

    async def __aenter__(self) -> LocalDurableRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _resume(self, instance_id: str) -> None:
        """Re-arm timers, re-run unfinished activities, settle finished children, drain the inbox."""
        record = self._store.load(instance_id)
        if record is None or record.is_terminal:
            return
        for timer in self._store.timers(instance_id):
            if timer.execution_id == record.execution_id:
                self._arm_timer(instance_id, record.execution_id, timer.timer_id, timer.fire_at)
        events = [*record.history, *record.inbox]
        finished = {
            e.get("TaskScheduledId")
            for e in events
            if e["EventType"]
            in (
                EventType.TASK_COMPLETED,
                EventType.TASK_FAILED,
                EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED,
                EventType.SUB_ORCHESTRATION_INSTANCE_FAILED,
            )
        }
        for e in record.history:
            if e["EventId"] in finished:
                continue
            if e["EventType"] == EventType.TASK_SCHEDULED:
                self._spawn_activity(
                    instance_id, record.execution_id, int(e["EventId"]), str(e["Name"]), e.get("Input")
                )
            elif e["EventType"] == EventType.SUB_ORCHESTRATION_INSTANCE_CREATED:
                child = self._store.load(str(e["InstanceId"]))
                if child is not None and child.is_terminal:
                    self._notify_parent(child)
        if record.inbox:
            self._kick(instance_id)

    # -- client operations (the webhooks call these) --------------------------------------

    async def start_new(
        self, name: str, instance_id: str | None = None, input: Any = None, *, version: str = ""
    ) -> str:
        """Start an orchestration with a Python input value; returns the instance id."""
        return self.start_serialized(name, instance_id, None if input is None else self._dumps(input), version=version)

    def start_serialized(
        self,
        name: str,
        instance_id: str | None,
        input_json: str | None,
        *,
        version: str = "",
        parent: tuple[str, int] | None = None,
    ) -> str:
        """Start with an already serialised input (webhook path); see :class:`InstanceAlreadyExistsError`."""
        registered = self._orchestrators.get(name)
        if registered is None:
            raise OrchestratorNotFoundError(name)
        instance_id = instance_id or uuid.uuid4().hex
        existing = self._store.load(instance_id)
        if existing is not None and not existing.is_terminal:
            raise InstanceAlreadyExistsError(instance_id, existing.runtime_status)
        now = self._clock()
        execution_id = uuid.uuid4().hex
        record = InstanceRecord(
            instance_id=instance_id,
            name=registered.name,
            execution_id=execution_id,
            runtime_status="Pending",
            input=input_json,
            created_time=now,
            last_updated_time=now,
            version=version,
            parent_instance_id=parent[0] if parent else None,
            parent_task_id=parent[1] if parent else None,
            inbox=[
                self._execution_started(registered.name, instance_id, execution_id, input_json, version, parent, now)
            ],
        )
        self._store.save(record, drop_all_timers=True)
        self._kick(instance_id)
        return instance_id

    async def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        """Deliver an external event with a Python value (see :meth:`raise_serialized`)."""
        self.raise_serialized(instance_id, event_name, self._dumps(data))

    def raise_serialized(self, instance_id: str, event_name: str, data_json: str | None) -> None:
        """Append an EventRaised to the instance's inbox, waiting or not (Durable buffers it).

        Raises :class:`InstanceNotFoundError` (404) or :class:`InstanceCompletedError` (410).
        """
        record = self._require(instance_id)
        if record.is_terminal:
            raise InstanceCompletedError(instance_id, record.runtime_status)
        record.inbox.append(event(EventType.EVENT_RAISED, self._clock(), Name=event_name, Input=data_json))
        self._store.save(record)
        self._kick(instance_id)

    async def get_status(self, instance_id: str, *, show_history: bool = False) -> OrchestrationStatus | None:
        """The instance's status, or None when unknown."""
        record = self._store.load(instance_id)
        return None if record is None else self._status(record, show_history=show_history)

    async def list_statuses(
        self,
        *,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: Sequence[str] | None = None,
        instance_id_prefix: str | None = None,
    ) -> list[OrchestrationStatus]:
        """Statuses of the instances matching every given filter."""
        return [
            self._status(record)
            for record in self._matching(created_time_from, created_time_to, runtime_status, instance_id_prefix)
        ]

    async def terminate(self, instance_id: str, reason: str = "") -> None:
        """Stop an instance now: status Terminated, output the reason, timers dropped.

        Raises :class:`InstanceNotFoundError` (404) or :class:`InstanceCompletedError` (410).
        """
        record = self._require(instance_id)
        if record.is_terminal:
            raise InstanceCompletedError(instance_id, record.runtime_status)
        now = self._clock()
        record.history.append(event(EventType.EXECUTION_TERMINATED, now, Input=json.dumps(reason)))
        self._finish(record, "Terminated", json.dumps(reason), now)

    async def purge(self, instance_id: str) -> int:
        """Delete a completed, failed or terminated instance; 0 when unknown or still running.

        Running instances are not purged (terminate first), like the SQL and Netherite task hubs.
        """
        record = self._store.load(instance_id)
        if record is None or not record.is_terminal:
            return 0
        return self._store.delete([instance_id])

    async def purge_by(
        self,
        *,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: Sequence[str] | None = None,
    ) -> int:
        """Purge every terminal instance matching the filters; returns how many went."""
        ids = [
            record.instance_id
            for record in self._matching(created_time_from, created_time_to, runtime_status, None)
            if record.is_terminal
        ]
        return self._store.delete(ids) if ids else 0

    async def wait_for_completion(self, instance_id: str, timeout_s: float = 10.0) -> OrchestrationStatus:
        """Wait until the instance is terminal (tests and tools); raises TimeoutError."""
        record = self._require(instance_id)
        if not record.is_terminal:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(instance_id, []).append(future)
            try:
                await asyncio.wait_for(future, timeout_s)
            finally:
                waiting = self._waiters.get(instance_id, [])
                if future in waiting:
                    waiting.remove(future)
            record = self._require(instance_id)
        return self._status(record)

    def pending_timers(self, instance_id: str | None = None) -> list[StoredTimer]:
        """Timers that have not fired (persisted view), soonest first."""
        return self._store.timers(instance_id)

    def armed_timer_count(self, instance_id: str) -> int:
        """How many in-memory timers are armed for an instance (diagnostics/tests)."""
        return sum(1 for key in self._timer_handles if key[0] == instance_id)

    # -- helpers --------------------------------------------------------------------------

    def _require(self, instance_id: str) -> InstanceRecord:
        record = self._store.load(instance_id)
        if record is None:
            raise InstanceNotFoundError(instance_id)
        return record

    def _matching(
        self,
        created_from: datetime | None,
        created_to: datetime | None,
        statuses: Sequence[str] | None,
        prefix: str | None,
    ) -> list[InstanceRecord]:
        wanted = {s.lower() for s in statuses} if statuses else None
        return [
            r
            for r in self._store.all_instances()
            if (created_from is None or r.created_time >= created_from)
            and (created_to is None or r.created_time <= created_to)
            and (wanted is None or r.runtime_status.lower() in wanted)
            and (prefix is None or r.instance_id.startswith(prefix))
        ]

    def _status(self, record: InstanceRecord, *, show_history: bool = False) -> OrchestrationStatus:
        return OrchestrationStatus(
            name=record.name,
            instance_id=record.instance_id,
            runtime_status=record.runtime_status,
            created_time=record.created_time,
            last_updated_time=record.last_updated_time,
            input=_json_or_none(record.input),
            output=_json_or_none(record.output),
            custom_status=_json_or_none(record.custom_status),
            history=[*record.history] if show_history else None,
        )

    @staticmethod
    def _execution_started(
        name: str,
        instance_id: str,
        execution_id: str,
        input_json: str | None,
        version: str,
        parent: tuple[str, int] | None,
        now: datetime,
    ) -> Event:
        return event(
            EventType.EXECUTION_STARTED,
            now,
            Name=name,
            Input=input_json,
            Version=version,
            OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
            ParentInstance=(
                {"OrchestrationInstance": {"InstanceId": parent[0]}, "TaskScheduleId": parent[1]} if parent else None
            ),
        )

    # -- the instance worker --------------------------------------------------------------

    def _kick(self, instance_id: str) -> None:
        """Make sure a worker drains this instance's inbox (one per instance, never two)."""
        if not self._running:
            return  # persisted; start() resumes it
        task = self._workers.get(instance_id)
        if task is None or task.done():
            self._workers[instance_id] = asyncio.get_running_loop().create_task(
                self._drain(instance_id), name=f"durable:{instance_id}"
            )

    async def _drain(self, instance_id: str) -> None:
        try:
            while self._running:
                record = self._store.load(instance_id)
                if record is None or record.is_terminal or not record.inbox:
                    return
                new_event = record.inbox.pop(0)
                try:
                    self._episode(record, new_event)
                except Exception as exc:  # a runtime bug must not wedge the instance silently
                    logger.exception("durable episode failed for %s", instance_id)
                    broken = self._store.load(instance_id)
                    if broken is not None and not broken.is_terminal:
                        message = f"Local durable runtime error: {type(exc).__name__}: {exc}"
                        self._finish(broken, "Failed", json.dumps(message), self._clock())
                await asyncio.sleep(0)
        finally:
            if self._workers.get(instance_id) is asyncio.current_task():
                del self._workers[instance_id]

    def _episode(self, record: InstanceRecord, new_event: Event) -> None:
        """Replay the history plus one new event through the SDK handle and apply its decisions."""
        now = self._clock()
        played = len(record.history)
        record.history.append(event(EventType.ORCHESTRATOR_STARTED, now))
        record.history.append(new_event)
        if record.runtime_status == "Pending":
            record.runtime_status = "Running"
        state, error = self._invoke_orchestrator(record, played)
        if state is not None and state.custom_status is not None:
            record.custom_status = json.dumps(state.custom_status)
        elif state is not None:
            record.custom_status = None
        if error is not None:
            failure = f"Orchestrator function '{record.name}' failed: {error}"
            record.history.append(
                event(EventType.EXECUTION_COMPLETED, now, OrchestrationStatus="Failed", Result=failure)
            )
            self._finish(record, "Failed", json.dumps(failure), now)
            return
        assert state is not None
        top = state.top_level_actions()
        if state.is_done:
            continued = next(
                (a for a in top[record.progress.actions_seen :] if a.action_type == ActionType.CONTINUE_AS_NEW), None
            )
            if continued is not None:
                self._continue_as_new(record, continued.input, now)
                return
            output = None if state.output is None else json.dumps(state.output)
            record.history.append(
                event(EventType.EXECUTION_COMPLETED, now, OrchestrationStatus="Completed", Result=output)
            )
            self._finish(record, "Completed", output, now)
            return
        plan = _Plan()
        try:
            self._react_to_retry(record, new_event, now, plan)
            self._schedule(record, top, now, plan)
        except _UnsupportedActionError as exc:
            failure = f"Orchestrator function '{record.name}' failed: {exc}"
            record.history.append(
                event(EventType.EXECUTION_COMPLETED, now, OrchestrationStatus="Failed", Result=failure)
            )
            self._finish(record, "Failed", json.dumps(failure), now)
            return
        record.history.append(event(EventType.ORCHESTRATOR_COMPLETED, now))
        record.last_updated_time = now
        self._store.save(record, add_timers=plan.add_timers, drop_timers=plan.drop_timers)
        self._apply(record, plan)

    def _invoke_orchestrator(
        self, record: InstanceRecord, played: int
    ) -> tuple[OrchestratorStateModel | None, str | None]:
        """Call the SDK handle with the host's context JSON; returns (state, error text)."""
        registered = self._orchestrators.get(record.name)
        if registered is None:
            return None, str(OrchestratorNotFoundError(record.name))
        context = {
            "history": [{**e, "IsPlayed": index < played} for index, e in enumerate(record.history)],
            "instanceId": record.instance_id,
            "isReplaying": played > 0,
            "parentInstanceId": record.parent_instance_id,
            "input": record.input,
            "upperSchemaVersion": _REPLAY_SCHEMA_V2,
        }
        try:
            with warnings.catch_warnings():
                # Raised-before-awaited events are buffered by the SDK with this warning.
                warnings.filterwarnings("ignore", message="Potential duplicate Task completion")
                raw = registered.func(json.dumps(context))
        except Exception as exc:  # the SDK reports orchestrator failures by raising
            text = str(exc)
            head, marker, tail = text.partition(OUT_OF_PROC_MARKER)
            if marker:
                try:
                    state = OrchestratorStateModel.model_validate_json(tail)
                except ValueError:
                    return None, head.strip()
                return state, state.error or head.strip()
            return None, f"{type(exc).__name__}: {exc}"
        if isinstance(raw, (str, bytes)):
            return OrchestratorStateModel.model_validate_json(raw), None
        return OrchestratorStateModel.model_validate(raw), None

    def _allocate(self, record: InstanceRecord) -> int:
        task_id = record.progress.next_id
        record.progress.next_id += 1
        return task_id

    def _react_to_retry(self, record: InstanceRecord, new_event: Event, now: datetime, plan: _Plan) -> None:
        """Drive CallActivityWithRetry like DurableTask.Core's retry interceptor (and the SDK)."""
        retries = record.progress.retries
        kind = new_event["EventType"]
        if kind == EventType.TASK_COMPLETED:
            retries.pop(int(new_event["TaskScheduledId"]), None)
        elif kind == EventType.TASK_FAILED:
            state = retries.pop(int(new_event["TaskScheduledId"]), None)
            if state is not None and state.phase == "task":
                timer_id = self._allocate(record)
                fire_at = now + timedelta(milliseconds=state.interval_ms)
                record.history.append(event(EventType.TIMER_CREATED, now, event_id=timer_id, FireAt=iso(fire_at)))
                state.phase = "timer"
                retries[timer_id] = state
                plan.add_timers.append((timer_id, fire_at))
        elif kind == EventType.TIMER_FIRED:
            state = retries.pop(int(new_event["TimerId"]), None)
            if state is not None and state.phase == "timer" and state.attempts < state.max_attempts:
                task_id = self._allocate(record)
                record.history.append(
                    event(EventType.TASK_SCHEDULED, now, event_id=task_id, Name=state.name, Input=state.input)
                )
                state.attempts += 1
                state.phase = "task"
                retries[task_id] = state
                plan.activities.append((task_id, state.name, state.input))

    def _schedule(self, record: InstanceRecord, top: list[Any], now: datetime, plan: _Plan) -> None:
        """Turn new actions into history events and planned work; honour timer cancellations."""
        progress = record.progress
        for index, action in enumerate(top[: progress.actions_seen]):
            for path, atomic in walk_atomic(action, str(index)):
                if atomic.action_type == ActionType.CREATE_TIMER and atomic.is_canceled:
                    timer_id = progress.timer_paths.get(path)
                    if timer_id is not None and (record.instance_id, timer_id) in self._timer_handles:
                        plan.drop_timers.append(timer_id)
        for index in range(progress.actions_seen, len(top)):
            for path, atomic in walk_atomic(top[index], str(index)):
                kind = atomic.action_type
                if kind not in _SUPPORTED_ACTIONS:
                    raise _UnsupportedActionError(
                        f"the local durable runtime does not support {atomic.kind_name} actions"
                    )
                if kind not in ID_CONSUMING_ACTIONS:
                    continue
                task_id = self._allocate(record)
                if kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY):
                    name = str(atomic.function_name)
                    record.history.append(
                        event(EventType.TASK_SCHEDULED, now, event_id=task_id, Name=name, Input=atomic.input)
                    )
                    if kind == ActionType.CALL_ACTIVITY_WITH_RETRY and atomic.retry_options is not None:
                        progress.retries[task_id] = RetryState(
                            name=name,
                            input=atomic.input,
                            interval_ms=atomic.retry_options.first_retry_interval_ms,
                            max_attempts=atomic.retry_options.max_number_of_attempts,
                        )
                    plan.activities.append((task_id, name, atomic.input))
                elif kind == ActionType.CREATE_TIMER:
                    progress.timer_paths[path] = task_id
                    if not atomic.is_canceled and atomic.fire_at is not None:
                        record.history.append(
                            event(EventType.TIMER_CREATED, now, event_id=task_id, FireAt=iso(atomic.fire_at))
                        )
                        plan.add_timers.append((task_id, atomic.fire_at))
                elif kind == ActionType.CALL_SUB_ORCHESTRATOR:
                    name = str(atomic.function_name)
                    child_id = atomic.instance_id or f"{record.instance_id}:{task_id:04d}"
                    record.history.append(
                        event(
                            EventType.SUB_ORCHESTRATION_INSTANCE_CREATED,
                            now,
                            event_id=task_id,
                            Name=name,
                            InstanceId=child_id,
                            Input=atomic.input,
                        )
                    )
                    plan.children.append((task_id, name, child_id, atomic.input, atomic.version or ""))
        progress.actions_seen = len(top)

    def _apply(self, record: InstanceRecord, plan: _Plan) -> None:
        """Start the committed episode's side effects."""
        for timer_id in plan.drop_timers:
            handle = self._timer_handles.pop((record.instance_id, timer_id), None)
            if handle is not None:
                handle.cancel()
        for timer_id, fire_at in plan.add_timers:
            self._arm_timer(record.instance_id, record.execution_id, timer_id, fire_at)
        for task_id, name, input_json in plan.activities:
            self._spawn_activity(record.instance_id, record.execution_id, task_id, name, input_json)
        for task_id, name, child_id, input_json, version in plan.children:
            self._start_child(record.instance_id, task_id, name, child_id, input_json, version)

    def _continue_as_new(self, record: InstanceRecord, input_json: str | None, now: datetime) -> None:
        """Restart with a fresh history and the new input; raised events not yet replayed carry over."""
        self._cancel_timer_handles(record.instance_id)
        carried = [e for e in record.inbox if e["EventType"] == EventType.EVENT_RAISED]
        record.execution_id = uuid.uuid4().hex
        record.input = input_json
        record.history = []
        record.progress = Progress()
        record.custom_status = None
        record.inbox = [
            self._execution_started(
                record.name,
                record.instance_id,
                record.execution_id,
                input_json,
                record.version,
                (record.parent_instance_id, record.parent_task_id)
                if record.parent_instance_id is not None and record.parent_task_id is not None
                else None,
                now,
            ),
            *carried,
        ]
        record.runtime_status = "Running"
        record.last_updated_time = now
        self._store.save(record, drop_all_timers=True)
        self._kick(record.instance_id)

    def _finish(self, record: InstanceRecord, status: str, output_json: str | None, now: datetime) -> None:
        """Make an instance terminal: persist, drop its timers, tell its parent and waiters."""
        record.runtime_status = status
        record.output = output_json
        record.inbox = []
        record.last_updated_time = now
        self._store.save(record, drop_all_timers=True)
        self._cancel_timer_handles(record.instance_id)
        for future in self._waiters.pop(record.instance_id, []):
            if not future.done():
                future.set_result(None)
        self._notify_parent(record)

    def _cancel_timer_handles(self, instance_id: str) -> None:
        for key in [k for k in self._timer_handles if k[0] == instance_id]:
            self._timer_handles.pop(key).cancel()

    def _deliver(self, instance_id: str, execution_id: str | None, new_event: Event) -> None:
        """Queue an event for the instance (dropped when it ended or continued as new meanwhile)."""
        record = self._store.load(instance_id)
        if record is None or record.is_terminal:
            return
        if execution_id is not None and record.execution_id != execution_id:
            return
        record.inbox.append(new_event)
        self._store.save(record)
        self._kick(instance_id)

    # -- timers ---------------------------------------------------------------------------

    def _arm_timer(self, instance_id: str, execution_id: str, timer_id: int, fire_at: datetime) -> None:
        if not self._running:
            return
        delay = max(0.0, (fire_at - self._clock()).total_seconds())
        old = self._timer_handles.pop((instance_id, timer_id), None)
        if old is not None:
            old.cancel()
        self._timer_handles[(instance_id, timer_id)] = asyncio.get_running_loop().call_later(
            delay, self._fire_timer, instance_id, execution_id, timer_id, fire_at
        )

    def _fire_timer(self, instance_id: str, execution_id: str, timer_id: int, fire_at: datetime) -> None:
        self._timer_handles.pop((instance_id, timer_id), None)
        try:
            record = self._store.load(instance_id)
            if record is None or record.is_terminal or record.execution_id != execution_id:
                return
            record.inbox.append(event(EventType.TIMER_FIRED, self._clock(), TimerId=timer_id, FireAt=iso(fire_at)))
            self._store.save(record, drop_timers=[timer_id])
            self._kick(instance_id)
        except Exception:
            logger.exception("durable timer %s of %s could not fire", timer_id, instance_id)

    # -- activities -----------------------------------------------------------------------

    def _spawn_activity(
        self, instance_id: str, execution_id: str, task_id: int, name: str, input_json: str | None
    ) -> None:
        if not self._running:
            return
        task = asyncio.get_running_loop().create_task(
            self._run_activity(instance_id, execution_id, task_id, name, input_json),
            name=f"durable-activity:{instance_id}:{task_id}:{name}",
        )
        self._activity_tasks.add(task)
        task.add_done_callback(self._activity_tasks.discard)

    async def _run_activity(
        self, instance_id: str, execution_id: str, task_id: int, name: str, input_json: str | None
    ) -> None:
        """Invoke the activity as the worker would (decode input, call, encode result)."""
        registered = self._activities.get(name)
        completion: Event
        if registered is None:
            completion = event(
                EventType.TASK_FAILED,
                self._clock(),
                TaskScheduledId=task_id,
                Reason=f"The function '{name}' doesn't exist, is disabled, or is not an activity function.",
                Details=None,
            )
        else:
            try:
                result = await self._call_activity(registered, input_json)
                completion = event(
                    EventType.TASK_COMPLETED, self._clock(), TaskScheduledId=task_id, Result=self._dumps(result)
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                completion = event(
                    EventType.TASK_FAILED,
                    self._clock(),
                    TaskScheduledId=task_id,
                    Reason=f"Activity function '{registered.name}' failed: {type(exc).__name__}: {exc}",
                    Details="".join(traceback.format_exception(exc)),
                )
        self._deliver(instance_id, execution_id, completion)

    async def _call_activity(self, registered: _Registered, input_json: str | None) -> Any:
        value: Any = None
        if input_json is not None:
            try:
                value = self._loads(input_json)
            except json.JSONDecodeError:
                value = input_json  # the worker's converter falls back to the raw string
        kwargs: dict[str, Any] = {registered.trigger_param: value}
        if registered.client_params:
            kwargs.update(dict.fromkeys(registered.client_params, self.client_binding_json()))
        func = registered.func
        if inspect.iscoroutinefunction(func):
            result = await func(**kwargs)
        else:
            result = await asyncio.to_thread(func, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        return result

    # -- sub-orchestrations ---------------------------------------------------------------

    def _start_child(
        self, parent_id: str, task_id: int, name: str, child_id: str, input_json: str | None, version: str
    ) -> None:
        try:
            self.start_serialized(name, child_id, input_json, version=version, parent=(parent_id, task_id))
        except DurableRuntimeError as exc:
            self._deliver(
                parent_id,
                None,
                event(
                    EventType.SUB_ORCHESTRATION_INSTANCE_FAILED,
                    self._clock(),
                    TaskScheduledId=task_id,
                    Reason=str(exc),
                    Details=None,
                ),
            )

    def _notify_parent(self, child: InstanceRecord) -> None:
        """Report a terminal sub-orchestration to its parent, once."""
        if child.parent_instance_id is None or child.parent_task_id is None:
            return
        parent = self._store.load(child.parent_instance_id)
        if parent is None or parent.is_terminal:
            return
        task_id = child.parent_task_id
        created = any(
            e["EventType"] == EventType.SUB_ORCHESTRATION_INSTANCE_CREATED
            and e["EventId"] == task_id
            and e.get("InstanceId") == child.instance_id
            for e in parent.history
        )
        already = any(
            e["EventType"]
            in (EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, EventType.SUB_ORCHESTRATION_INSTANCE_FAILED)
            and e.get("TaskScheduledId") == task_id
            for e in [*parent.history, *parent.inbox]
        )
        if not created or already:
            return
        now = self._clock()
        if child.runtime_status == "Completed":
            outcome = event(
                EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, now, TaskScheduledId=task_id, Result=child.output
            )
        else:
            reason = _json_or_none(child.output)
            outcome = event(
                EventType.SUB_ORCHESTRATION_INSTANCE_FAILED,
                now,
                TaskScheduledId=task_id,
                Reason=(
                    f"Sub-orchestration '{child.name}' ({child.instance_id}) {child.runtime_status.lower()}: {reason}"
                ),
                Details=None,
            )
        self._deliver(parent.instance_id, parent.execution_id, outcome)


async def reset_durable_sdk_session() -> None:
    """Forget the SDK's module-global aiohttp session (and its lock) between event loops.

    Why: ``azure.durable_functions.models.utils.http_utils`` keeps one ``ClientSession`` for
    the process; a session created on a loop that has since closed fails on the next loop
    (pytest-asyncio gives every test its own loop; the devhost may restart its loop). Call this
    before a loop closes (it closes the session when it belongs to the running loop) or at the
    start of the next one (it then only drops the stale reference).
    """
    from azure.durable_functions.models.utils import http_utils

    session = http_utils._client_session
    http_utils._client_session = None
    http_utils._session_lock = asyncio.Lock()
    if session is None or session.closed:
        return
    try:
        same_loop = session._loop is asyncio.get_running_loop()
    except AttributeError:  # pragma: no cover - aiohttp internals moved
        same_loop = False
    if same_loop:
        await session.close()
    else:
        # Its loop is gone; silence aiohttp's "Unclosed client session" warning on collection.
        session._connector = None
