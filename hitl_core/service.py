"""HitlService: start, resume, status, inbox, cancel, audit — host-agnostic.

This is the one place where "save checkpoint -> outbox -> publish" happens. Every write that
creates a fact worth announcing also records the CloudEvents for it in the session's outbox, in
the same conditional write. After the write the events are published and, off the response
path, removed from the outbox. If the process dies in between, the next call touching the
session — or the timer-triggered :meth:`sweep` — publishes them again with the same event ids
(consumers de-duplicate), so no approval is ever silently un-notified.

Every decision (and every refused attempt, cancellation, expiry, escalation) is appended to the
session's hash-chained audit trail in the same write as the state change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .audit import append_record, verify_chain
from .checkpoint.base import CheckpointStorage
from .checkpoint.models import (
    FINISHED_STATUSES,
    AuditRecord,
    Decision,
    PendingRequest,
    StoredCheckpoint,
    WorkflowCheckpoint,
    utcnow,
)
from .errors import (
    ConcurrencyError,
    HitlError,
    InputValidationError,
    NotAuthorizedError,
    RequestAlreadyHandledError,
    SessionConflictError,
    SessionNotFoundError,
    StorageError,
    UnknownWorkflowError,
)
from .events.models import EventType, make_event
from .events.publisher import EventPublisher
from .links import LinkSigner
from .registry import WorkflowSpec
from .serialization import decode, plain
from .settings import Settings
from .views import AuditRecordView, AuditView, HealthView, InboxPage, RequestView, SessionView
from .workflow.events import RequestInfoEvent, WorkflowEvent
from .workflow.request_info import find_response_type, request_data_view, response_json_schema
from .workflow.runner import Phase, RunOptions, fingerprint
from .workflow.workflow import Workflow

logger = logging.getLogger("hitl_core.service")

SYSTEM_ACTOR = "system"
_PUBLISHED_MEMORY = 10_000


@dataclass(frozen=True)
class Caller:
    """Who is acting, as established by the host (Easy Auth principal, dev header, signed link)."""

    user: str | None = None
    roles: tuple[str, ...] = ()
    source: str | None = None
    via: str = "api"

    def identities(self) -> set[str]:
        found = {r.lower() for r in self.roles}
        if self.user:
            found.add(self.user.lower())
        return found


@dataclass(frozen=True)
class StartResult:
    created: bool
    session: SessionView


@dataclass(frozen=True)
class TimeoutOutcome:
    outcome: str  # "decided" | "expired" | "auto_responded" | "escalated"
    deadline: dt.datetime | None = None


class HitlService:
    """The product's operations over one checkpoint storage and one event publisher."""

    def __init__(
        self,
        *,
        settings: Settings,
        storage: CheckpointStorage,
        publisher: EventPublisher,
        workflows: Iterable[WorkflowSpec],
        signer: LinkSigner | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.publisher = publisher
        self.signer = signer
        self.specs: dict[str, WorkflowSpec] = {}
        self.workflows: dict[str, Workflow] = {}
        for spec in workflows:
            self.specs[spec.name] = spec
            workflow = spec.build(storage, settings)
            workflow.lease_seconds = settings.resume_lease_seconds
            if workflow.name != spec.name:
                raise ValueError(f"workflow spec {spec.name!r} built a workflow named {workflow.name!r}")
            self.workflows[spec.name] = workflow
        self._background: set[asyncio.Task[None]] = set()
        self._clears: dict[str, asyncio.TimerHandle] = {}
        self.outbox_clear_delay = 1.0
        #: Ids this process has published; pruned from outboxes at the next write of the session.
        self._published: OrderedDict[str, None] = OrderedDict()
        self._schema_cache: dict[tuple[str, str, str], dict[str, Any]] = {}

    # ------------------------------------------------------------------ helpers
    def _spec(self, name: str) -> WorkflowSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise UnknownWorkflowError(name, list(self.specs))
        return spec

    def _ttl(self) -> int | None:
        return self.settings.session_ttl_seconds or None

    def _ttl_for(self, cp: WorkflowCheckpoint) -> int | None:
        """A write must keep a finished session's TTL (no TTL: kept forever)."""
        return self._ttl() if cp.status in FINISHED_STATUSES else None

    async def _load(self, session_id: str) -> StoredCheckpoint:
        stored = await self.storage.load(session_id)
        if stored is None:
            raise SessionNotFoundError(session_id)
        return stored

    def _response_schema(self, workflow: str, pending: PendingRequest) -> dict[str, Any]:
        key = (workflow, pending.executor_id, pending.request_type)
        cached = self._schema_cache.get(key)
        if cached is not None:
            return cached
        schema: dict[str, Any] = {}
        wf = self.workflows.get(workflow)
        executor = wf.executors.get(pending.executor_id) if wf else None
        if executor is not None:
            request_cls = type(decode(pending.request))
            response_type = find_response_type(executor, request_cls)
            if response_type is not None:
                schema = response_json_schema(response_type)
        self._schema_cache[key] = schema
        return schema

    def decide_url(self, session_id: str, call_id: str, approver: str | None = None) -> str | None:
        if self.signer is None:
            return None
        token = self.signer.sign(session_id, call_id, approver)
        return f"{self.settings.public_base_url}/api/decide?token={token}"

    def request_view(self, cp: WorkflowCheckpoint, pending: PendingRequest, *, with_link: bool = False) -> RequestView:
        return RequestView(
            call_id=pending.call_id,
            session_id=cp.session_id,
            workflow=cp.workflow,
            executor_id=pending.executor_id,
            request_type=pending.request_type.rpartition(":")[2].rpartition(".")[2],
            data=request_data_view(pending.request),
            response_schema=self._response_schema(cp.workflow, pending),
            created_at=pending.created_at,
            deadline=pending.deadline,
            approvers=list(pending.approvers),
            status="pending",
            decide_url=self.decide_url(cp.session_id, pending.call_id) if with_link else None,
        )

    def session_view(self, cp: WorkflowCheckpoint) -> SessionView:
        return SessionView(
            session_id=cp.session_id,
            workflow=cp.workflow,
            status=cp.status,
            pending_requests=[self.request_view(cp, p) for p in cp.pending_requests],
            outputs=[plain(o) for o in cp.outputs],
            created_at=cp.created_at,
            updated_at=cp.updated_at,
            decisions=[d.view() for d in cp.decisions],
            error=cp.error,
        )

    # ------------------------------------------------------------------ outbox
    def _announce(self, cp: WorkflowCheckpoint, events: Sequence[WorkflowEvent], phase: Phase) -> None:
        """Turn what a run did into outbox entries (called inside the save hook)."""
        for event in events:
            if isinstance(event, RequestInfoEvent):
                pending = cp.find_pending(event.request_id)
                if pending is not None:
                    view = self.request_view(cp, pending, with_link=True)
                    cp.outbox.append(make_event(EventType.REQUEST_CREATED, workflow=cp.workflow,
                                                session_id=cp.session_id, call_id=pending.call_id,
                                                data=view.model_dump(mode="json")))
        if phase in ("start", "final", "cancel") and cp.status in FINISHED_STATUSES:
            kind = {
                "completed": EventType.SESSION_COMPLETED,
                "failed": EventType.SESSION_FAILED,
                "cancelled": EventType.SESSION_CANCELLED,
            }[cp.status]
            cp.outbox.append(make_event(kind, workflow=cp.workflow, session_id=cp.session_id, call_id=None,
                                        data=self.session_view(cp).model_dump(mode="json")))

    def _resolved_event(self, cp: WorkflowCheckpoint, decision: Decision) -> dict[str, Any]:
        data = {
            "call_id": decision.call_id,
            "session_id": cp.session_id,
            "workflow": cp.workflow,
            "executor_id": decision.executor_id,
            "status": decision.outcome,
            "deadline": (plain(decision.request) or {}).get("deadline") if decision.request else None,
            "decision": decision.view(),
        }
        kind = EventType.REQUEST_EXPIRED if decision.outcome == "expired" else EventType.REQUEST_RESOLVED
        return make_event(kind, workflow=cp.workflow, session_id=cp.session_id, call_id=decision.call_id, data=data)

    async def _publish(self, stored: StoredCheckpoint | None) -> None:
        """Publish the outbox of a just-saved checkpoint, then clear it in the background."""
        if stored is None or not stored.checkpoint.outbox:
            return
        events = [e for e in stored.checkpoint.outbox if e["id"] not in self._published]
        try:
            await self.publisher.publish(events)
        except Exception as exc:  # the sweep or the next call retries
            logger.warning("publishing %d event(s) of session %s failed: %s", len(events),
                           stored.checkpoint.session_id, type(exc).__name__)
            return
        for event in events:
            self._published[event["id"]] = None
        while len(self._published) > _PUBLISHED_MEMORY:
            self._published.popitem(last=False)
        self._schedule_clear(stored.checkpoint.session_id)

    def _schedule_clear(self, session_id: str) -> None:
        """Remove published events from the outbox a little later, unless a write does it first.

        The next write of a session drops what this process published (see the save hook), so a
        session that is decided soon after it was started needs no clean-up write of its own.
        """
        if session_id in self._clears:
            return
        loop = asyncio.get_running_loop()
        self._clears[session_id] = loop.call_later(self.outbox_clear_delay, self._run_clear, session_id)

    def _run_clear(self, session_id: str) -> None:
        self._clears.pop(session_id, None)
        task = asyncio.get_running_loop().create_task(self._clear_outbox(session_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _clear_outbox(self, session_id: str) -> None:
        """Best effort: an outbox left full is only republished later (same ids), never lost."""
        try:
            for _ in range(5):
                stored = await self.storage.load(session_id)
                if stored is None:
                    return
                cp = stored.checkpoint
                if cp.status == "running":
                    return  # a continuation holds the session; it republishes and clears after its write
                remaining = [e for e in cp.outbox if e["id"] not in self._published]
                if len(remaining) == len(cp.outbox):
                    return
                cp.outbox = remaining
                ttl = self._ttl_for(cp)
                try:
                    await self.storage.save(cp, expected_version=stored.version, ttl_seconds=ttl)
                    return
                except ConcurrencyError:
                    continue
        except StorageError as exc:
            logger.warning("clearing the outbox of %s failed: %s", session_id, exc)

    async def drain(self) -> None:
        """Run pending outbox clean-ups now and wait for them (tests and shutdown)."""
        for session_id, handle in list(self._clears.items()):
            handle.cancel()
            self._run_clear(session_id)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def flush(self, session_id: str) -> int:
        """Publish whatever is left in a session's outbox; returns how many events were sent."""
        stored = await self.storage.load(session_id)
        if stored is None or not stored.checkpoint.outbox or stored.checkpoint.status == "running":
            return 0
        count = len(stored.checkpoint.outbox)
        await self._publish(stored)
        return count

    async def sweep(self, *, limit: int = 500) -> dict[str, int]:
        """Timer-triggered: publish leftover outboxes and finish continuations whose process died."""
        published = recovered = 0
        continuation: str | None = None
        seen = 0
        while seen < limit:
            page = await self.storage.list_sessions(limit=min(100, limit - seen), continuation=continuation)
            for summary in page.items:
                seen += 1
                stored = await self.storage.load(summary.session_id)
                if stored is None:
                    continue
                cp = stored.checkpoint
                if cp.status == "running" and cp.workflow in self.workflows:
                    if not self._lease_live(cp):
                        await self._recover(cp)
                        recovered += 1
                elif cp.outbox:
                    published += len(cp.outbox)
                    await self._publish(stored)
            continuation = page.continuation
            if continuation is None:
                break
        await self.drain()
        return {"published": published, "recovered": recovered, "scanned": seen}

    def _options(self, caller: Caller | None, decided: set[str] | None, **extra: Any) -> RunOptions:
        """RunOptions whose save hook writes the outbox and the audit records."""
        decided_ids = decided or set()

        def hook(cp: WorkflowCheckpoint, events: Sequence[WorkflowEvent], phase: Phase) -> Sequence[AuditRecord]:
            # what this process already published needs no second write to leave the outbox
            cp.outbox = [e for e in cp.outbox if e["id"] not in self._published]
            records: list[AuditRecord] = []
            if phase == "claim":
                for decision in cp.decisions:
                    if decision.call_id in decided_ids and not decision.applied:
                        records.append(append_record(
                            cp, "decided" if decision.outcome == "answered" else decision.outcome,
                            call_id=decision.call_id, actor=decision.decided_by,
                            source=caller.source if caller else None,
                            detail={"result": plain(decision.result), "via": caller.via if caller else "system"},
                        ))
                        cp.outbox.append(self._resolved_event(cp, decision))
            elif phase == "cancel":
                records.append(append_record(cp, "cancelled", actor=caller.user if caller else None,
                                             source=caller.source if caller else None))
                for decision in cp.decisions:
                    if decision.outcome == "cancelled" and decision.call_id in decided_ids:
                        cp.outbox.append(self._resolved_event(cp, decision))
            elif phase == "start":
                records.append(append_record(cp, "started", actor=caller.user if caller else None,
                                             source=caller.source if caller else None))
            self._announce(cp, events, phase)
            return records

        return RunOptions(
            decided_by=caller.user if caller else SYSTEM_ACTOR,
            save_hook=hook,
            finished_ttl_seconds=self._ttl(),
            **extra,
        )

    # ------------------------------------------------------------------ operations
    async def start(self, workflow: str, *, input: Any, session_id: str | None = None,
                    caller: Caller | None = None) -> StartResult:
        """Start a session (idempotent per session id and input)."""
        spec = self._spec(workflow)
        try:
            model = spec.input_model.model_validate(input)
        except ValidationError as exc:
            raise InputValidationError(workflow, _errors(exc)) from None
        digest = fingerprint({"workflow": workflow, "input": model.model_dump(mode="json")})
        sid = session_id or str(uuid.uuid4())
        existing = await self.storage.load(sid)
        if existing is not None:
            return await self._existing_start(existing, workflow, digest)
        opts = self._options(caller, None, input_fingerprint=digest,
                             metadata={"started_by": caller.user if caller else None,
                                       "separation_of_duties": spec.separation_of_duties})
        runner = self.workflows[workflow].runner(self.storage)
        try:
            cp = await self._run(runner.start(sid, spec.start_message(model), opts, check_exists=False), opts)
        except ConcurrencyError:  # the same session id was started concurrently
            stored = await self._load(sid)
            return await self._existing_start(stored, workflow, digest)
        return StartResult(created=True, session=self.session_view(cp))

    async def _run(self, stream: AsyncIterator[WorkflowEvent], opts: RunOptions) -> WorkflowCheckpoint:
        """Drive an engine call that writes (start, resume) and publish what it announced."""
        await self._drive(stream, opts)
        if opts.saved is None:  # pragma: no cover - start and resume always write or raise
            raise RuntimeError("the engine finished without saving")
        return opts.saved.checkpoint

    async def _drive(self, stream: AsyncIterator[WorkflowEvent], opts: RunOptions) -> None:
        """Drive an engine call to its end, then publish what its writes announced.

        A workflow that fails after its state was saved is a stored outcome (the session shows
        ``failed``), not an error of the call; storage errors and refusals before any write are.
        """
        try:
            async for _ in stream:
                pass
        except StorageError:
            raise
        except HitlError as exc:
            if opts.saved is None:
                raise
            logger.info("session %s ended in failure: %s", opts.saved.checkpoint.session_id, exc)
        await self._publish(opts.saved)

    async def _existing_start(self, stored: StoredCheckpoint, workflow: str, digest: str) -> StartResult:
        cp = stored.checkpoint
        if cp.workflow != workflow or cp.input_fingerprint != digest:
            raise SessionConflictError(
                f"session {cp.session_id!r} exists already with "
                f"{'another workflow' if cp.workflow != workflow else 'other input'}",
                session_id=cp.session_id,
            )
        await self._publish(stored if cp.status != "running" else None)
        return StartResult(created=False, session=self.session_view(cp))

    async def get_session(self, session_id: str) -> SessionView:
        stored = await self._load(session_id)
        cp = stored.checkpoint
        if cp.status == "running" and not self._lease_live(cp) and cp.workflow in self.workflows:
            return self.session_view(await self._recover(cp))
        if cp.outbox and cp.status != "running":
            await self._publish(stored)
        return self.session_view(cp)

    @staticmethod
    def _lease_live(cp: WorkflowCheckpoint) -> bool:
        lease = cp.metadata.get("lease_until")
        return lease is not None and dt.datetime.fromisoformat(lease) > utcnow()

    async def _recover(self, cp: WorkflowCheckpoint) -> WorkflowCheckpoint:
        """Finish a continuation whose process died (its lease ran out); publish what it announced."""
        opts = self._options(None, None)
        await self._drive(self.workflows[cp.workflow].runner(self.storage).recover(cp.session_id, opts), opts)
        return (await self._load(cp.session_id)).checkpoint

    def authorize(self, pending: PendingRequest, caller: Caller | None, cp: WorkflowCheckpoint) -> None:
        """Only the request's approvers may decide (a request without approvers: anyone)."""
        if caller is None or caller.via == "system":
            return
        if self.settings.auth_mode == "easyauth" and caller.user is None:
            raise NotAuthorizedError("deciding needs an authenticated caller (App Service Authentication)")
        allowed = {a.lower() for a in pending.approvers}
        if allowed and not (caller.identities() & allowed):
            raise NotAuthorizedError(
                f"{caller.user or 'an anonymous caller'} is not an approver of request {pending.call_id!r}"
            )
        initiator = cp.metadata.get("started_by")
        if cp.metadata.get("separation_of_duties") and initiator and caller.user and \
                caller.user.lower() == str(initiator).lower():
            raise NotAuthorizedError(f"{caller.user} started session {cp.session_id!r} and may not approve it")

    async def respond(self, session_id: str, call_id: str, result: Any, *, caller: Caller | None = None) -> SessionView:
        """Apply a person's decision; exactly one concurrent decision wins."""
        stored = await self._load(session_id)
        cp = stored.checkpoint
        runner = self.workflows.get(cp.workflow)
        if runner is None:
            raise UnknownWorkflowError(cp.workflow, list(self.specs))
        pending = cp.find_pending(call_id)
        if pending is not None:
            try:
                self.authorize(pending, caller, cp)
            except NotAuthorizedError as exc:
                await self.audit_refusal(session_id, call_id, caller, str(exc))
                raise
        opts = self._options(caller, {call_id})
        return self.session_view(await self._run(runner.runner(self.storage).resume(session_id, {call_id: result},
                                                                                     opts), opts))

    async def audit_refusal(self, session_id: str, call_id: str | None, caller: Caller | None, reason: str) -> None:
        """A refused attempt is audited; the request itself stays exactly as it was."""
        for _ in range(5):
            stored = await self.storage.load(session_id)
            if stored is None:
                return
            cp = stored.checkpoint
            record = append_record(cp, "refused", call_id=call_id, actor=caller.user if caller else None,
                                   source=caller.source if caller else None, detail={"reason": reason})
            ttl = self._ttl_for(cp)
            try:
                await self.storage.save(cp, expected_version=stored.version, ttl_seconds=ttl, audit=[record])
                return
            except ConcurrencyError:
                continue

    async def cancel(self, session_id: str, *, caller: Caller | None = None) -> SessionView:
        stored = await self._load(session_id)
        cp = stored.checkpoint
        workflow = self.workflows.get(cp.workflow)
        if workflow is None:
            raise UnknownWorkflowError(cp.workflow, list(self.specs))
        opts = self._options(caller, set(cp.pending_call_ids()))
        await workflow.runner(self.storage).cancel(session_id, opts)
        await self._publish(opts.saved)
        assert opts.saved is not None
        return self.session_view(opts.saved.checkpoint)

    async def inbox(self, *, workflow: str | None = None, assignee: str | None = None,
                    continuation: str | None = None, limit: int = 50) -> InboxPage:
        page = await self.storage.list_pending_requests(workflow=workflow, assignee=assignee,
                                                        continuation=continuation, limit=limit)
        items = []
        for entry in page.items:
            cp_stub = WorkflowCheckpoint.model_construct(session_id=entry.session_id, workflow=entry.workflow)
            items.append(self.request_view(cp_stub, entry.request))
        return InboxPage(items=items, continuation=page.continuation)

    async def audit(self, session_id: str, *, verify: bool = False) -> AuditView:
        records = await self.storage.list_audit(session_id)
        if not records and await self.storage.load(session_id) is None:
            raise SessionNotFoundError(session_id)
        return AuditView(
            session_id=session_id,
            records=[AuditRecordView.model_validate(r.model_dump(exclude={"session_id"})) for r in records],
            verification=verify_chain(records) if verify else None,
        )

    async def health(self) -> HealthView:
        storage_state = eventing_state = "ok"
        try:
            await self.storage.load("__health__")
        except Exception as exc:
            storage_state = f"unavailable ({type(exc).__name__})"
        try:
            await self.publisher.check()
        except Exception as exc:
            eventing_state = f"unavailable ({type(exc).__name__})"
        status = "ok" if storage_state == eventing_state == "ok" else "degraded"
        return HealthView(status=status, storage=storage_state, eventing=eventing_state)

    # ------------------------------------------------------------------ deadlines
    async def pending_request(self, session_id: str, call_id: str) -> PendingRequest | None:
        stored = await self.storage.load(session_id)
        return stored.checkpoint.find_pending(call_id) if stored else None

    async def remind(self, session_id: str, call_id: str, number: int) -> bool:
        """Announce a reminder for a still-pending request (False if it was decided meanwhile)."""
        stored = await self.storage.load(session_id)
        if stored is None:
            return False
        cp = stored.checkpoint
        pending = cp.find_pending(call_id)
        if pending is None:
            return False
        data = self.request_view(cp, pending, with_link=True).model_dump(mode="json")
        data["reminder_number"] = number
        await self.publisher.publish([make_event(EventType.REQUEST_REMINDER, workflow=cp.workflow,
                                                 session_id=session_id, call_id=call_id, data=data,
                                                 discriminator=str(number))])
        return True

    async def apply_timeout(self, session_id: str, call_id: str) -> TimeoutOutcome:
        """The deadline passed: apply the request's policy (expire | auto_respond | escalate)."""
        system = Caller(user=SYSTEM_ACTOR, source="deadline", via="system")
        while True:
            stored = await self.storage.load(session_id)
            if stored is None:
                return TimeoutOutcome("decided")
            cp = stored.checkpoint
            pending = cp.find_pending(call_id)
            if pending is None:
                return TimeoutOutcome("decided")
            policy = dict(pending.policy)
            action = policy.get("action", "expire")
            if action == "escalate" and policy.get("escalated"):
                action = policy.get("then", "expire")
            if action == "auto_respond":
                try:
                    await self.respond(session_id, call_id, policy.get("default"),
                                       caller=Caller(user="system:auto_respond", source="deadline", via="system"))
                except RequestAlreadyHandledError:
                    return TimeoutOutcome("decided")
                return TimeoutOutcome("auto_responded")
            if action == "escalate":
                extend = int(policy.get("extend_seconds", self.settings.reminder_interval_seconds))
                new_deadline = utcnow() + dt.timedelta(seconds=extend)
                previous = list(pending.approvers)
                pending.approvers = list(policy.get("escalate_to", previous))
                pending.deadline = new_deadline
                policy["escalated"] = True
                pending.policy = policy
                record = append_record(cp, "escalated", call_id=call_id, actor=system.user, source=system.source,
                                       detail={"from": previous, "to": pending.approvers,
                                               "deadline": new_deadline.isoformat()})
                data = self.request_view(cp, pending, with_link=True).model_dump(mode="json")
                data["escalated_from"] = previous
                cp.outbox.append(make_event(EventType.REQUEST_ESCALATED, workflow=cp.workflow, session_id=session_id,
                                            call_id=call_id, data=data))
                cp.updated_at = utcnow()
                try:
                    version = await self.storage.save(cp, expected_version=stored.version, audit=[record])
                except ConcurrencyError:
                    continue
                await self._publish(StoredCheckpoint.model_construct(checkpoint=cp, version=version))
                return TimeoutOutcome("escalated", new_deadline)
            # expire
            now = utcnow()
            cp.pending_requests.remove(pending)
            decision = Decision(call_id=call_id, request_type=pending.request_type, result=None,
                                decided_by=system.user, decided_at=now, applied=True, outcome="expired",
                                request=pending.request, executor_id=pending.executor_id,
                                request_executor_id=pending.request_executor_id)
            cp.decisions.append(decision)
            record = append_record(cp, "expired", call_id=call_id, actor=system.user, source=system.source,
                                   detail={"deadline": pending.deadline.isoformat() if pending.deadline else None})
            cp.outbox.append(self._resolved_event(cp, decision))
            if not cp.pending_requests and cp.status == "pending":
                cp.status = "failed"
                cp.error = f"request {call_id!r} expired at its deadline without a decision"
                cp.outbox.append(make_event(EventType.SESSION_FAILED, workflow=cp.workflow, session_id=session_id,
                                            call_id=None, data=self.session_view(cp).model_dump(mode="json")))
            cp.updated_at = now
            ttl = self._ttl_for(cp)
            try:
                version = await self.storage.save(cp, expected_version=stored.version, ttl_seconds=ttl,
                                                  audit=[record])
            except ConcurrencyError:
                continue
            await self._publish(StoredCheckpoint.model_construct(checkpoint=cp, version=version))
            return TimeoutOutcome("expired")

    async def close(self) -> None:
        await self.drain()
        await self.publisher.close()
        await self.storage.close()


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
