"""WorkflowBuilder and Workflow: the graph, its validation, and the seed's run methods.

A ``checkpoint_id`` is the caller's stable key for one session. ``run(message,
checkpoint_id=k)`` starts session k; ``run_stream_from_checkpoint(k, responses=...)`` resumes
it from storage alone, in any process. Without checkpoint storage a workflow still pauses and
resumes (``send_responses``) through a private in-memory store — Pattern 1 of the seed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..checkpoint.base import CheckpointStorage
from ..checkpoint.memory import InMemoryCheckpointStorage
from ..errors import (
    CheckpointingNotConfiguredError,
    ConcurrencyError,
    SessionConflictError,
    WorkflowDefinitionError,
    WorkflowRunError,
)
from .events import (
    RequestInfoEvent,
    WorkflowEvent,
    WorkflowFailedEvent,
    WorkflowOutputEvent,
    WorkflowRunState,
    WorkflowStatusEvent,
)
from .executor import Executor
from .request_info import RequestInfoExecutor, RequestInfoMessage, RequestResponse, response_spec
from .runner import CheckpointPolicy, ResumeMode, RunOptions, SessionRunner
from .typing_utils import describe, runtime_class

if TYPE_CHECKING:
    from .agent import WorkflowAgent

Condition = Callable[[Any], bool]


@dataclass(frozen=True)
class Edge:
    source_id: str
    target_id: str
    condition: Condition | None = None


class WorkflowRunResult(list[WorkflowEvent]):
    """The events of one run, with the seed's accessors."""

    def get_outputs(self) -> list[Any]:
        return [e.data for e in self if isinstance(e, WorkflowOutputEvent)]

    def get_request_info_events(self) -> list[RequestInfoEvent]:
        return [e for e in self if isinstance(e, RequestInfoEvent)]

    def get_final_state(self) -> WorkflowRunState:
        states = [e.state for e in self if isinstance(e, WorkflowStatusEvent)]
        return states[-1] if states else WorkflowRunState.IN_PROGRESS

    def get_failure(self) -> WorkflowFailedEvent | None:
        return next((e for e in self if isinstance(e, WorkflowFailedEvent)), None)


class WorkflowBuilder:
    """Assemble executors and edges into a validated :class:`Workflow`."""

    def __init__(self, name: str = "workflow", *, max_supersteps: int = 1000) -> None:
        self._name = name
        self._executors: dict[str, Executor] = {}
        self._edges: list[Edge] = []
        self._start: Executor | None = None
        self._storage: CheckpointStorage | None = None
        self._policy: CheckpointPolicy = "on_pause"
        self._lease_seconds = 300.0
        self._resume_mode: ResumeMode = "claim"
        self._max_supersteps = max_supersteps

    def _register(self, executor: Executor) -> Executor:
        if not isinstance(executor, Executor):
            raise WorkflowDefinitionError(f"expected an Executor, got {type(executor).__qualname__}")
        existing = self._executors.get(executor.id)
        if existing is not None and existing is not executor:
            raise WorkflowDefinitionError(f"two different executors use the id {executor.id!r}")
        self._executors[executor.id] = executor
        return executor

    def set_start_executor(self, executor: Executor) -> WorkflowBuilder:
        self._start = self._register(executor)
        return self

    def add_edge(self, source: Executor, target: Executor, condition: Condition | None = None) -> WorkflowBuilder:
        """Connect ``source`` to ``target``; ``condition(message)`` may filter what travels."""
        self._register(source)
        self._register(target)
        self._edges.append(Edge(source.id, target.id, condition))
        return self

    def with_checkpointing(self, checkpoint_storage: CheckpointStorage, *, policy: CheckpointPolicy = "on_pause",
                           lease_seconds: float = 300.0, resume_mode: ResumeMode = "claim") -> WorkflowBuilder:
        """Persist sessions in ``checkpoint_storage``.

        ``policy="on_pause"`` (default) writes at pause, completion, failure and cancellation;
        ``"per_superstep"`` also writes after every superstep, for long runs. ``lease_seconds``
        bounds how long a crashed resume keeps a session busy before another caller finishes it.
        ``resume_mode="claim"`` (default) runs handler code exactly once per decision;
        ``"optimistic"`` saves one write per resume for workflows whose handlers only touch
        workflow state (see :data:`hitl_core.workflow.runner.ResumeMode`).
        """
        if policy not in ("on_pause", "per_superstep"):
            raise WorkflowDefinitionError(f"unknown checkpoint policy {policy!r}")
        if resume_mode not in ("claim", "optimistic"):
            raise WorkflowDefinitionError(f"unknown resume mode {resume_mode!r}")
        self._storage = checkpoint_storage
        self._policy = policy
        self._lease_seconds = lease_seconds
        self._resume_mode = resume_mode
        return self

    def build(self) -> Workflow:
        if self._start is None:
            raise WorkflowDefinitionError("no start executor: call set_start_executor(executor)")
        self._check_reachability(self._start)
        for edge in self._edges:
            self._check_edge_types(edge)
        return Workflow(
            name=self._name,
            executors=dict(self._executors),
            edges=list(self._edges),
            start_executor=self._start,
            storage=self._storage,
            policy=self._policy,
            lease_seconds=self._lease_seconds,
            max_supersteps=self._max_supersteps,
            resume_mode=self._resume_mode,
        )

    def _check_reachability(self, start: Executor) -> None:
        reached = {start.id}
        frontier = [start.id]
        while frontier:
            current = frontier.pop()
            for edge in self._edges:
                if edge.source_id == current and edge.target_id not in reached:
                    reached.add(edge.target_id)
                    frontier.append(edge.target_id)
            # a RequestInfoExecutor answers whoever asked; requesters reached it, so nothing new here
        unreachable = sorted(set(self._executors) - reached)
        if unreachable:
            raise WorkflowDefinitionError(
                f"executors {', '.join(repr(u) for u in unreachable)} cannot be reached from the start executor "
                f"{start.id!r}; add edges to them or remove them"
            )

    def _check_edge_types(self, edge: Edge) -> None:
        source = self._executors[edge.source_id]
        target = self._executors[edge.target_id]
        if isinstance(source, RequestInfoExecutor):
            if not any(response_spec(t) for t in target.input_types()):
                raise WorkflowDefinitionError(
                    f"edge {source.id!r} -> {target.id!r}: {target.id!r} has no handler for RequestResponse[...], "
                    "the only thing a RequestInfoExecutor sends"
                )
            return
        sent = source.declared_output_types()
        if sent is None:
            return  # undeclared (bare WorkflowContext): checked at run time instead
        if not sent:
            raise WorkflowDefinitionError(
                f"edge {source.id!r} -> {target.id!r}: {source.id!r} declares that it sends no messages "
                "(WorkflowContext[Never]) but has an outgoing edge"
            )
        if isinstance(target, RequestInfoExecutor):
            ok = any(t is Any or t is object or _is_subclass(t, RequestInfoMessage) for t in sent)
        else:
            ok = any(_can_accept(spec_type, t) for t in sent for spec_type in target.input_types())
        if not ok:
            raise WorkflowDefinitionError(
                f"edge {source.id!r} -> {target.id!r}: {target.id!r} has no handler for any type {source.id!r} "
                f"sends ({', '.join(describe(t) for t in sent)}); it accepts "
                f"{', '.join(describe(t) for t in target.input_types())}"
            )


def _is_subclass(tp: Any, base: type) -> bool:
    cls = runtime_class(tp)
    return cls is not None and issubclass(cls, base)


def _can_accept(accepted: Any, sent: Any) -> bool:
    """Could a handler annotated ``accepted`` receive a value of declared type ``sent``?"""
    from .typing_utils import flatten_union

    if accepted is Any or accepted is object or sent is Any:
        return True
    for a in flatten_union(accepted):
        if a is Any or a is object:
            return True
        pair = response_spec(a)
        if pair is not None and response_spec(sent) is not None:
            return True
        a_cls, s_cls = runtime_class(a), runtime_class(sent)
        if a_cls is not None and s_cls is not None and (issubclass(s_cls, a_cls) or issubclass(a_cls, s_cls)):
            return True
    return False


class Workflow:
    """A built, validated workflow graph. Safe to share between concurrent sessions."""

    def __init__(self, *, name: str, executors: dict[str, Executor], edges: list[Edge], start_executor: Executor,
                 storage: CheckpointStorage | None, policy: CheckpointPolicy, lease_seconds: float,
                 max_supersteps: int, resume_mode: ResumeMode = "claim") -> None:
        self.name = name
        self.executors = executors
        self.edges = edges
        self.start_executor = start_executor
        self.storage = storage
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.max_supersteps = max_supersteps
        self.resume_mode: ResumeMode = resume_mode
        self._edges_from: dict[str, list[Edge]] = {}
        for edge in edges:
            self._edges_from.setdefault(edge.source_id, []).append(edge)
        self._scratch: InMemoryCheckpointStorage | None = None
        self._current_session: str | None = None

    def edges_from(self, source_id: str) -> list[Edge]:
        return self._edges_from.get(source_id, [])

    @property
    def request_types(self) -> list[type]:
        """Request classes answered by some executor (to resolve them in other processes)."""
        found: list[type] = []
        for executor in self.executors.values():
            for spec in executor.handlers:
                pair = response_spec(spec.message_type)
                if pair is not None:
                    found.append(pair[0])
        return found

    # -- storage selection --------------------------------------------------------------
    def _storage_for(self, checkpoint_id: str | None, override: CheckpointStorage | None = None) -> CheckpointStorage:
        if override is not None:
            return override
        if self.storage is not None:
            return self.storage
        if checkpoint_id is not None:
            raise CheckpointingNotConfiguredError(checkpoint_id)
        if self._scratch is None:
            self._scratch = InMemoryCheckpointStorage()
        return self._scratch

    def runner(self, storage: CheckpointStorage | None = None) -> SessionRunner:
        """The engine bound to ``storage`` (default: the configured one)."""
        chosen = storage or self.storage
        if chosen is None:
            raise CheckpointingNotConfiguredError("<none>")
        return self._runner_for(chosen)

    def _runner_for(self, storage: CheckpointStorage) -> SessionRunner:
        return SessionRunner(self, storage, policy=self.policy, lease_seconds=self.lease_seconds,
                             max_supersteps=self.max_supersteps, resume_mode=self.resume_mode)

    # -- the seed's methods -------------------------------------------------------------
    async def run_stream(self, message: Any, *, checkpoint_id: str | None = None,
                         options: RunOptions | None = None) -> AsyncIterator[WorkflowEvent]:
        """Start a session (``checkpoint_id`` names it) and stream its events until it idles."""
        storage = self._storage_for(checkpoint_id)
        session_id = checkpoint_id or str(uuid.uuid4())
        self._current_session = session_id
        try:
            async for event in self._runner_for(storage).start(session_id, message, options):
                yield event
        except ConcurrencyError:
            raise SessionConflictError(f"session {session_id!r} was started concurrently",
                                       session_id=session_id) from None

    async def run(self, message: Any, *, checkpoint_id: str | None = None,
                  options: RunOptions | None = None) -> WorkflowRunResult:
        """Start a session and run it until it pauses, completes or fails."""
        return await _collect(self.run_stream(message, checkpoint_id=checkpoint_id, options=options))

    async def run_stream_from_checkpoint(
        self,
        checkpoint_id: str,
        checkpoint_storage: CheckpointStorage | None = None,
        responses: Mapping[str, Any] | None = None,
        *,
        options: RunOptions | None = None,
    ) -> AsyncIterator[WorkflowEvent]:
        """Continue the stored session ``checkpoint_id``.

        With ``responses`` ({call_id: answer}) the answers are applied (exactly once); without,
        the pending requests are re-emitted as RequestInfoEvents, and a session left half-way
        by a crashed process is finished.
        """
        storage = self._storage_for(checkpoint_id, checkpoint_storage)
        self._current_session = checkpoint_id
        runner = self._runner_for(storage)
        stream = runner.resume(checkpoint_id, responses, options) if responses else runner.recover(checkpoint_id,
                                                                                                   options)
        async for event in stream:
            yield event

    async def run_from_checkpoint(self, checkpoint_id: str, checkpoint_storage: CheckpointStorage | None = None,
                                  responses: Mapping[str, Any] | None = None, *,
                                  options: RunOptions | None = None) -> WorkflowRunResult:
        """Non-streaming :meth:`run_stream_from_checkpoint`."""
        return await _collect(
            self.run_stream_from_checkpoint(checkpoint_id, checkpoint_storage, responses, options=options)
        )

    async def send_responses_streaming(self, responses: Mapping[str, Any]) -> AsyncIterator[WorkflowEvent]:
        """Answer requests of the session this object ran last."""
        if self._current_session is None:
            raise WorkflowRunError("no session to send responses to: run the workflow first")
        storage = self._storage_for(None)
        async for event in self._runner_for(storage).resume(self._current_session, responses):
            yield event

    async def send_responses(self, responses: Mapping[str, Any]) -> WorkflowRunResult:
        return await _collect(self.send_responses_streaming(responses))

    async def cancel(self, checkpoint_id: str, checkpoint_storage: CheckpointStorage | None = None) -> None:
        await self._runner_for(self._storage_for(checkpoint_id, checkpoint_storage)).cancel(checkpoint_id)

    def as_agent(self, name: str | None = None) -> WorkflowAgent:
        from .agent import WorkflowAgent

        return WorkflowAgent(self, name=name)


async def _collect(stream: AsyncIterator[WorkflowEvent]) -> WorkflowRunResult:
    result = WorkflowRunResult()
    async for event in stream:
        result.append(event)
    return result


__all__ = ["Edge", "RequestResponse", "Workflow", "WorkflowBuilder", "WorkflowRunResult"]
