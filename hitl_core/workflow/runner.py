"""The engine: runs a session superstep by superstep and checkpoints it.

A run delivers every queued message in supersteps (messages sent during superstep N are
delivered in N+1) until nothing is queued. Then the session is either ``completed`` or
``pending`` (waiting for people). Checkpoints are written at pause, completion, failure and
cancellation — one write for a run-until-pause — or after every superstep with the
``per_superstep`` policy.

Exactly one resume wins. Resuming first *claims* the answered requests with a conditional
write (the request leaves ``pending_requests`` and becomes a ``Decision``, the session becomes
``running`` under a lease); only the writer whose claim lands runs the continuation, then
commits it with a second conditional write. A concurrent resume of the same request sees the
recorded decision and gets :class:`RequestAlreadyHandledError`. If the claimer dies, its lease
expires and the next caller (or ``recover``) runs the recorded-but-unapplied decisions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..checkpoint.base import CheckpointStorage
from ..checkpoint.models import (
    FINISHED_STATUSES,
    AuditRecord,
    Decision,
    PendingRequest,
    StoredCheckpoint,
    WorkflowCheckpoint,
    utcnow,
)
from ..errors import (
    ConcurrencyError,
    HitlError,
    MisroutedRequestError,
    RequestAlreadyHandledError,
    SessionClosedError,
    SessionConflictError,
    SessionNotFoundError,
    UnknownRequestError,
    VoteRecorded,
    WorkflowDefinitionError,
    WorkflowRunError,
)
from ..serialization import decode, encode, plain, type_name
from .events import (
    RequestInfoEvent,
    WorkflowEvent,
    WorkflowFailedEvent,
    WorkflowOutputEvent,
    WorkflowRunState,
    WorkflowStatusEvent,
)
from .executor import WorkflowContext
from .policy import ApprovalPolicy
from .request_info import (
    RequestInfoExecutor,
    RequestInfoMessage,
    RequestResponse,
    approver_entries,
    find_response_type,
    validate_response,
)
from .typing_utils import describe

if TYPE_CHECKING:
    from .workflow import Workflow

logger = logging.getLogger("hitl_core.engine")

CheckpointPolicy = Literal["on_pause", "per_superstep"]
#: ``claim``: a conditional write claims the request before the continuation runs, so handler code
#: runs exactly once even under concurrent resumes (1 read + 2 writes). ``optimistic``: the
#: continuation runs in memory and commits with one conditional write (1 read + 1 write); under
#: concurrent resumes of one request only one commits, but losing handlers may have run.
ResumeMode = Literal["claim", "optimistic"]
Phase = Literal["start", "claim", "final", "cancel", "superstep", "vote"]

#: Called just before each write; may add outbox entries to the checkpoint and returns audit
#: records to append in the same write. ``events`` are those emitted since the previous write.
SaveHook = Callable[[WorkflowCheckpoint, Sequence[WorkflowEvent], Phase], Sequence[AuditRecord]]


@dataclass
class _Envelope:
    message: Any
    source_id: str
    target_id: str


@dataclass
class RunOptions:
    """Per-call knobs the service sets (the library defaults suit direct use)."""

    decided_by: str | None = None
    #: The approver a delegate acted for ("ron for amy": decided_by ron, on_behalf_of amy).
    on_behalf_of: str | None = None
    #: How the decider acted (``api``, ``link``, ``system``...), recorded on the decision.
    decided_via: str | None = None
    #: Awaited before every write of a run, before ``save_hook``: the service resolves new
    #: requests' approvers and subject through the directory here (I/O the sync hook cannot do).
    prepare: Callable[[WorkflowCheckpoint], Awaitable[None]] | None = None
    #: For requests whose answers are votes: called inside the claim's conditional-write loop, on
    #: the freshly loaded request, with the validated answer; answers ``(final, votes)``. Not final:
    #: the vote alone is written and :class:`VoteRecorded` raised. Final: the claim proceeds with
    #: ``votes`` kept on the decision. One loop, one conditional write: no vote lost, one resume.
    ballot: Callable[[WorkflowCheckpoint, PendingRequest, Any], tuple[bool, list[dict[str, Any]]]] | None = None
    #: A read the caller already made (the service reads to authorise): the claim's first attempt
    #: uses it instead of reading again, so an uncontended vote or decision is one read, one write.
    preloaded: StoredCheckpoint | None = None
    save_hook: SaveHook | None = None
    finished_ttl_seconds: int | None = None
    input_fingerprint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Set by the runner after every write: the checkpoint as stored and its version.
    saved: StoredCheckpoint | None = None

    def record(self, checkpoint: WorkflowCheckpoint, version: str) -> str:
        self.saved = StoredCheckpoint.model_construct(checkpoint=checkpoint, version=version)
        return version


def fingerprint(value: Any) -> str:
    """A stable digest of a start input, for idempotent starts."""
    return hashlib.sha256(json.dumps(plain(encode(value)), sort_keys=True, default=str).encode()).hexdigest()


class RunState:
    """The in-memory state of one run of one session (the context's back end)."""

    def __init__(self, workflow: Workflow, checkpoint: WorkflowCheckpoint) -> None:
        self.workflow = workflow
        self.checkpoint = checkpoint
        self.queue: list[_Envelope] = [self._decode_envelope(e) for e in checkpoint.queue]
        checkpoint.queue = []
        self.next_queue: list[_Envelope] = []
        self.buffer: list[WorkflowEvent] = []
        self.unsaved_events: list[WorkflowEvent] = []

    # -- context operations ---------------------------------------------------------------
    def emit(self, event: WorkflowEvent) -> None:
        self.buffer.append(event)
        self.unsaved_events.append(event)

    def get_executor_state(self, executor_id: str) -> Any:
        stored = self.checkpoint.executor_states.get(executor_id)
        return None if stored is None else decode(stored)

    def set_executor_state(self, executor_id: str, state: Any) -> None:
        self.checkpoint.executor_states[executor_id] = encode(state, f"state of executor {executor_id!r}")

    def get_shared_state(self, key: str, default: Any) -> Any:
        if key not in self.checkpoint.shared_state:
            return default
        return decode(self.checkpoint.shared_state[key])

    def set_shared_state(self, key: str, value: Any) -> None:
        self.checkpoint.shared_state[key] = encode(value, f"shared state {key!r}")

    def yield_output(self, output: Any, *, source_id: str) -> None:
        self.checkpoint.outputs.append(encode(output, f"output of executor {source_id!r}"))
        self.emit(WorkflowOutputEvent(data=output, source_executor_id=source_id))

    def send(self, message: Any, *, source_id: str, target_id: str | None) -> None:
        """Route ``message`` now, so a routing mistake fails inside the sending handler."""
        wf = self.workflow
        is_request = isinstance(message, RequestInfoMessage)
        if is_request:
            if message.source_executor_id is None:
                message.source_executor_id = source_id
            encode(message, f"request {type(message).__qualname__} sent by {source_id!r}")  # fail loudly now
        edges = wf.edges_from(source_id)
        if target_id is not None:
            target = wf.executors.get(target_id)
            if target is None:
                raise WorkflowRunError(
                    f"executor {source_id!r} sent {type(message).__qualname__} to unknown executor {target_id!r}; "
                    f"known executors: {', '.join(sorted(wf.executors))}"
                )
            edge = next((e for e in edges if e.target_id == target_id), None)
            if edge is None:
                raise WorkflowRunError(
                    f"executor {source_id!r} sent {type(message).__qualname__} to {target_id!r} but there is no "
                    f"edge between them: add_edge({source_id!r}, {target_id!r})"
                )
            if edge.condition is not None and not edge.condition(message):
                return
            if not target.can_handle(message):
                if is_request and not isinstance(target, RequestInfoExecutor):
                    raise MisroutedRequestError(self._misrouted(message, source_id, [target_id]))
                raise WorkflowRunError(
                    f"executor {target_id!r} has no handler for {type(message).__qualname__} sent by {source_id!r}; "
                    f"it accepts {', '.join(describe(t) for t in target.input_types())}"
                )
            self.next_queue.append(_Envelope(message, source_id, target_id))
            return
        candidates = [e.target_id for e in edges if e.condition is None or e.condition(message)]
        accepting = [t for t in candidates if wf.executors[t].can_handle(message)]
        if is_request and not any(isinstance(wf.executors[t], RequestInfoExecutor) for t in accepting):
            raise MisroutedRequestError(self._misrouted(message, source_id, candidates))
        if candidates and not accepting:
            raise WorkflowRunError(
                f"no executor reachable from {source_id!r} ({', '.join(candidates)}) has a handler for "
                f"{type(message).__qualname__}"
            )
        self.next_queue.extend(_Envelope(message, source_id, t) for t in accepting)

    def _misrouted(self, message: Any, source_id: str, targets: Sequence[str]) -> str:
        request_executors = [e.id for e in self.workflow.executors.values() if isinstance(e, RequestInfoExecutor)]
        hint = request_executors[0] if request_executors else "<your RequestInfoExecutor>"
        reached = ", ".join(repr(t) for t in targets) or "no executor"
        return (
            f"{type(message).__qualname__} (a RequestInfoMessage) sent by {source_id!r} reached {reached}, which "
            f"cannot handle it, so the workflow would not pause for a person. Route it with "
            f"ctx.send_message(request, target_id=request_info_executor.id) (here: target_id={hint!r}) and add "
            f"an edge {source_id!r} -> {hint!r}."
        )

    def register_request(self, message: RequestInfoMessage, *, request_executor_id: str) -> None:
        """Record a pending request (called by RequestInfoExecutor)."""
        cp = self.checkpoint
        requester_id = message.source_executor_id or ""
        requester = self.workflow.executors.get(requester_id)
        if requester is None:
            raise WorkflowRunError(f"request {message.request_id!r} names unknown source executor {requester_id!r}")
        response_type = find_response_type(requester, type(message), message)
        if response_type is None:
            raise WorkflowRunError(
                f"executor {requester_id!r} sent {type(message).__qualname__} but has no handler for "
                f"RequestResponse[{type(message).__qualname__}, <response type>], so the answer could not be "
                "delivered; add one"
            )
        call_id = message.request_id
        if cp.find_pending(call_id) is not None or cp.find_decision(call_id) is not None:
            raise WorkflowRunError(f"request id {call_id!r} is already used in session {cp.session_id!r}")
        deadline = message.deadline
        if deadline is not None and deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=dt.UTC)
        cp.pending_requests.append(
            PendingRequest(
                call_id=call_id,
                executor_id=requester_id,
                request_executor_id=request_executor_id,
                request_type=type_name(type(message)),
                response_type=type_name(response_type) if isinstance(response_type, type) else describe(response_type),
                request=encode(message, f"request {call_id!r}"),
                created_at=utcnow(),
                deadline=deadline,
                approvers=approver_entries(message.approvers),
                policy=dict(message.timeout_policy or {}),
                subject=message.subject.strip().lower() if message.subject else None,
                approval=message.approval.model_dump() if message.approval and message.approval.stored else None,
            )
        )
        self.emit(
            RequestInfoEvent(
                data=message,
                request_id=call_id,
                source_executor_id=requester_id,
                request_type=type(message),
                response_type=response_type if isinstance(response_type, type) else None,
            )
        )

    # -- queue persistence (per_superstep policy) -----------------------------------------
    def _decode_envelope(self, data: Any) -> _Envelope:
        return _Envelope(decode(data["message"]), data["source_id"], data["target_id"])

    def encode_queue(self) -> list[Any]:
        return [
            {"message": encode(e.message, "queued message"), "source_id": e.source_id, "target_id": e.target_id}
            for e in self.queue
        ]

    # -- the loop -------------------------------------------------------------------------
    async def superstep(self) -> None:
        batch, self.queue = self.queue, []
        groups: dict[str, list[_Envelope]] = {}
        for envelope in batch:
            groups.setdefault(envelope.target_id, []).append(envelope)
        if len(groups) == 1:
            (target_id, envelopes), = groups.items()
            await self._deliver_all(target_id, envelopes)
        else:
            await asyncio.gather(*(self._deliver_all(t, envs) for t, envs in groups.items()))
        self.queue, self.next_queue = self.next_queue, []
        self.checkpoint.superstep += 1

    async def _deliver_all(self, target_id: str, envelopes: list[_Envelope]) -> None:
        executor = self.workflow.executors[target_id]
        ctx: WorkflowContext[Any, Any] = WorkflowContext(self, target_id)
        for envelope in envelopes:
            spec = executor.find_handler(envelope.message)
            if spec is None:  # routing checked this already; a restored queue may disagree
                raise WorkflowRunError(
                    f"executor {target_id!r} has no handler for {type(envelope.message).__qualname__}"
                )
            try:
                await spec.func(executor, envelope.message, ctx)
            except HitlError:
                raise
            except Exception as exc:
                raise WorkflowRunError(
                    f"executor {target_id!r} failed in {spec.name} handling {type(envelope.message).__qualname__}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc


class SessionRunner:
    """Start, resume, recover and cancel sessions of one workflow against one storage."""

    def __init__(self, workflow: Workflow, storage: CheckpointStorage, *, policy: CheckpointPolicy = "on_pause",
                 lease_seconds: float = 300.0, max_supersteps: int = 1000,
                 resume_mode: ResumeMode = "claim") -> None:
        self.workflow = workflow
        self.storage = storage
        self.policy = policy
        self.resume_mode = resume_mode
        self.lease_seconds = lease_seconds
        self.max_supersteps = max_supersteps

    # -- public operations ----------------------------------------------------------------
    async def start(self, session_id: str, message: Any, options: RunOptions | None = None,
                    *, check_exists: bool = True) -> AsyncIterator[WorkflowEvent]:
        """Run a new session until it pauses, completes or fails; yields events as they happen."""
        opts = options or RunOptions()
        start = self.workflow.start_executor
        if not start.can_handle(message):
            raise WorkflowRunError(
                f"start executor {start.id!r} has no handler for {type(message).__qualname__}; it accepts "
                f"{', '.join(describe(t) for t in start.input_types())}"
            )
        if check_exists and await self.storage.load(session_id) is not None:
            raise SessionConflictError(f"session {session_id!r} exists already", session_id=session_id)
        cp = WorkflowCheckpoint(session_id=session_id, workflow=self.workflow.name,
                                input_fingerprint=opts.input_fingerprint, metadata=dict(opts.metadata))
        run = RunState(self.workflow, cp)
        run.queue.append(_Envelope(message, "__start__", start.id))
        async for event in self._drive(run, None, opts, "start"):
            yield event

    async def resume(self, session_id: str, responses: Mapping[str, Any],
                     options: RunOptions | None = None) -> AsyncIterator[WorkflowEvent]:
        """Apply answers to pending requests and continue; exactly one concurrent caller wins."""
        opts = options or RunOptions()
        if self.resume_mode == "optimistic":
            async for event in self._resume_optimistic(session_id, responses, opts):
                yield event
            return
        stored = await self._claim(session_id, responses, opts)
        async for event in self._continue(stored, opts):
            yield event

    async def _resume_optimistic(self, session_id: str, responses: Mapping[str, Any],
                                 opts: RunOptions) -> AsyncIterator[WorkflowEvent]:
        """One read, the continuation in memory, one conditional write; events are released on commit."""
        while True:
            stored = await self._claim(session_id, responses, opts, write=False)
            claim_audit = list(opts.save_hook(stored.checkpoint, [], "claim")) if opts.save_hook else []
            buffered: list[WorkflowEvent] = []
            try:
                async for event in self._continue(stored, opts, extra_audit=claim_audit):
                    buffered.append(event)
            except ConcurrencyError:
                continue  # someone else committed first: re-check (usually RequestAlreadyHandledError)
            except BaseException:
                for event in buffered:
                    yield event
                raise
            for event in buffered:
                yield event
            return

    async def recover(self, session_id: str, options: RunOptions | None = None) -> AsyncIterator[WorkflowEvent]:
        """Finish a session whose claimer died (expired lease); a no-op for idle sessions."""
        opts = options or RunOptions()
        stored = await self._claim(session_id, {}, opts, recovering=True)
        async for event in self._continue(stored, opts):
            yield event

    async def cancel(self, session_id: str, options: RunOptions | None = None) -> WorkflowCheckpoint:
        """End the session; its pending requests end as cancelled."""
        opts = options or RunOptions()
        while True:
            stored = await self._load(session_id)
            cp = stored.checkpoint
            if cp.status in FINISHED_STATUSES:
                raise SessionClosedError(session_id, cp.status)
            now = utcnow()
            for pending in cp.pending_requests:
                cp.decisions.append(Decision(call_id=pending.call_id, request_type=pending.request_type,
                                             result=None, decided_by=opts.decided_by, decided_at=now,
                                             applied=True, outcome="cancelled", request=pending.request,
                                             executor_id=pending.executor_id,
                                             request_executor_id=pending.request_executor_id))
            cp.pending_requests = []
            cp.queue = []
            cp.status = "cancelled"
            cp.updated_at = now
            cp.metadata.pop("lease_until", None)
            events: list[WorkflowEvent] = [WorkflowStatusEvent(state=WorkflowRunState.CANCELLED)]
            audit = opts.save_hook(cp, events, "cancel") if opts.save_hook else ()
            try:
                opts.record(cp, await self.storage.save(cp, expected_version=stored.version,
                                                        ttl_seconds=opts.finished_ttl_seconds, audit=audit))
            except ConcurrencyError:
                continue
            return cp

    # -- internals ------------------------------------------------------------------------
    async def _load(self, session_id: str) -> StoredCheckpoint:
        stored = await self.storage.load(session_id)
        if stored is None:
            raise SessionNotFoundError(session_id)
        if stored.checkpoint.workflow != self.workflow.name:
            raise WorkflowDefinitionError(
                f"session {session_id!r} belongs to workflow {stored.checkpoint.workflow!r}, "
                f"not {self.workflow.name!r}"
            )
        return stored

    def _lease_live(self, cp: WorkflowCheckpoint) -> bool:
        until = cp.metadata.get("lease_until")
        return cp.status == "running" and until is not None and dt.datetime.fromisoformat(until) > utcnow()

    async def _claim(self, session_id: str, responses: Mapping[str, Any], opts: RunOptions,
                     *, recovering: bool = False, write: bool = True) -> StoredCheckpoint:
        delay = 0.01
        waited = 0.0
        conflicts = 0
        preloaded, opts.preloaded = opts.preloaded, None
        while True:
            if preloaded is not None and preloaded.checkpoint.session_id == session_id:
                stored, preloaded = preloaded, None  # the caller's read is this attempt's read
            else:
                if conflicts:  # lost a conditional write: back off a little (jittered) before re-reading
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * 2 ** min(conflicts, 5))))
                stored = await self._load(session_id)
            cp = stored.checkpoint
            validated: dict[str, tuple[PendingRequest, Any]] = {}
            for call_id, result in responses.items():
                pending = cp.find_pending(call_id)
                if pending is None:
                    decision = cp.find_decision(call_id)
                    if decision is not None:
                        raise RequestAlreadyHandledError(call_id, decision.view(), session_id=session_id)
                    if cp.status in FINISHED_STATUSES:
                        raise SessionClosedError(session_id, cp.status)
                    raise UnknownRequestError(call_id, cp.pending_call_ids(), session_id=session_id)
                validated[call_id] = (pending, self.validate_answer(pending, result, session_id))
            if cp.status in FINISHED_STATUSES:
                raise SessionClosedError(session_id, cp.status)
            if self._lease_live(cp):
                if waited >= self.lease_seconds:
                    raise WorkflowRunError(f"session {session_id!r} stayed busy for {waited:.1f}s")
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 0.5)
                continue
            unapplied = [d for d in cp.decisions if not d.applied]
            if not validated and not unapplied and not cp.queue:
                if recovering:
                    return stored  # nothing to do
                raise UnknownRequestError("", cp.pending_call_ids(), session_id=session_id)
            now = utcnow()
            votes: dict[str, list[dict[str, Any]]] = {}
            lost_race = False
            for call_id, (pending, value) in validated.items():
                if opts.ballot is None or pending.approval is None or \
                        not ApprovalPolicy.model_validate(pending.approval).votes:
                    continue
                final, counted = opts.ballot(cp, pending, value)
                if final:
                    votes[call_id] = counted
                    continue
                pending.votes = counted
                cp.updated_at = now
                vote_audit = opts.save_hook(cp, [], "vote") if opts.save_hook else ()
                try:
                    version = await self.storage.save(cp, expected_version=stored.version, audit=vote_audit)
                except ConcurrencyError:
                    lost_race = True  # another write came first: reload and count again
                    conflicts += 1
                    break
                opts.record(cp, version)
                raise VoteRecorded(f"vote on request {call_id!r} recorded; the request is still pending")
            if lost_race:
                continue
            for call_id, (pending, value) in validated.items():
                cp.pending_requests.remove(pending)
                cp.decisions.append(Decision(
                    call_id=call_id, request_type=pending.request_type, result=encode(value, f"answer to {call_id!r}"),
                    decided_by=opts.decided_by, via=opts.decided_via, decided_at=now, applied=False,
                    on_behalf_of=opts.on_behalf_of, request=pending.request,
                    executor_id=pending.executor_id, request_executor_id=pending.request_executor_id,
                    votes=votes.get(call_id, []),
                ))
            cp.status = "running"
            cp.updated_at = now
            if not write:
                return stored  # optimistic: the continuation's commit is the only write
            cp.metadata["lease_until"] = (now + dt.timedelta(seconds=self.lease_seconds)).isoformat()
            audit = opts.save_hook(cp, [], "claim") if opts.save_hook else ()
            try:
                version = await self.storage.save(cp, expected_version=stored.version, audit=audit)
            except ConcurrencyError:
                conflicts += 1
                continue
            opts.record(cp, version)
            return StoredCheckpoint.model_construct(checkpoint=cp, version=version)

    def validate_answer(self, pending: PendingRequest, result: Any, session_id: str) -> Any:
        """``result`` as the request's response type (ResponseValidationError if it is not one)."""
        requester = self.workflow.executors.get(pending.executor_id)
        if requester is None:
            raise WorkflowDefinitionError(
                f"request {pending.call_id!r} was made by executor {pending.executor_id!r}, which this workflow "
                "no longer has"
            )
        request = decode(pending.request)
        response_type = find_response_type(requester, type(request), request)
        if response_type is None:
            raise WorkflowDefinitionError(
                f"executor {requester.id!r} no longer handles answers to {type(request).__qualname__}"
            )
        return validate_response(result, response_type, call_id=pending.call_id, session_id=session_id)

    async def _continue(self, stored: StoredCheckpoint, opts: RunOptions,
                        extra_audit: Sequence[AuditRecord] = ()) -> AsyncIterator[WorkflowEvent]:
        cp = stored.checkpoint
        if cp.status != "running":
            for pending_event in self.workflow_pending_events(cp):
                yield pending_event
            yield WorkflowStatusEvent(state=_state_for(cp.status))
            return
        run = RunState(self.workflow, cp)
        for decision in cp.decisions:
            if decision.applied:
                continue
            response = RequestResponse(data=decode(decision.result), original_request=decode(decision.request),
                                       request_id=decision.call_id, decided_by=decision.decided_by,
                                       votes=list(decision.votes), on_behalf_of=decision.on_behalf_of)
            run.queue.append(_Envelope(response, decision.request_executor_id or "", decision.executor_id or ""))
            decision.applied = True
        async for event in self._drive(run, stored.version, opts, "final", extra_audit):
            yield event

    @staticmethod
    def workflow_pending_events(cp: WorkflowCheckpoint) -> list[RequestInfoEvent]:
        return RequestInfoExecutor.pending_requests_from_checkpoint(cp)

    async def _drive(self, run: RunState, version: str | None, opts: RunOptions,
                     phase: Phase, extra_audit: Sequence[AuditRecord] = ()) -> AsyncIterator[WorkflowEvent]:
        cp = run.checkpoint
        yield WorkflowStatusEvent(state=WorkflowRunState.IN_PROGRESS)
        failure: BaseException | None = None
        while run.queue and failure is None:
            try:
                if cp.superstep >= self.max_supersteps:
                    raise WorkflowRunError(
                        f"session {cp.session_id!r} exceeded {self.max_supersteps} supersteps; "
                        "is there a cycle without a pause?"
                    )
                await run.superstep()
            except Exception as exc:  # a handler or routing failure fails the session
                failure = exc
            for event in run.buffer:
                yield event
            run.buffer.clear()
            if failure is None and self.policy == "per_superstep" and run.queue:
                # storage errors here propagate: the session stays as last saved
                cp.queue = run.encode_queue()
                cp.status = "running"
                cp.updated_at = utcnow()
                cp.metadata["lease_until"] = (utcnow() + dt.timedelta(seconds=self.lease_seconds)).isoformat()
                version = await self._save(run, version, opts, "superstep", None)
                cp.queue = []
        cp.queue = []
        cp.updated_at = utcnow()
        cp.metadata.pop("lease_until", None)
        final_events: list[WorkflowEvent] = []
        if failure is not None:
            logger.warning("session %s failed: %s", cp.session_id, failure)
            cp.status = "failed"
            cp.error = str(failure)
            cp.pending_requests = []
            final_events = [WorkflowFailedEvent(error=failure),
                            WorkflowStatusEvent(state=WorkflowRunState.FAILED)]
        elif cp.pending_requests:
            cp.status = "pending"
            final_events = [WorkflowStatusEvent(state=WorkflowRunState.IDLE_WITH_PENDING_REQUESTS)]
        else:
            cp.status = "completed"
            final_events = [WorkflowStatusEvent(state=WorkflowRunState.IDLE)]
        run.unsaved_events.extend(final_events)
        ttl = opts.finished_ttl_seconds if cp.status in FINISHED_STATUSES else None
        await self._save(run, version, opts, phase, ttl, extra_audit)
        for event in final_events:
            yield event
        if failure is not None:
            raise failure

    async def _save(self, run: RunState, version: str | None, opts: RunOptions, phase: Phase,
                    ttl: int | None, extra_audit: Sequence[AuditRecord] = ()) -> str:
        cp = run.checkpoint
        audit = list(extra_audit)
        if opts.prepare is not None:
            await opts.prepare(cp)
        if opts.save_hook:
            audit.extend(opts.save_hook(cp, list(run.unsaved_events), phase))
        new_version = await self.storage.save(cp, expected_version=version, ttl_seconds=ttl, audit=audit)
        run.unsaved_events.clear()
        return opts.record(cp, new_version)


def _state_for(status: str) -> WorkflowRunState:
    return {
        "pending": WorkflowRunState.IDLE_WITH_PENDING_REQUESTS,
        "completed": WorkflowRunState.IDLE,
        "failed": WorkflowRunState.FAILED,
        "cancelled": WorkflowRunState.CANCELLED,
    }.get(status, WorkflowRunState.IN_PROGRESS)
