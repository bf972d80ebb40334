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
import json
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError

from .access import ADMINS, AUDITORS, AccessPolicy, Caller, Identity, grant_reader
from .audit import append_record, verify_chain
from .checkpoint.base import CheckpointStorage, DelegationStorage, OutboxClearing
from .checkpoint.models import (
    FINISHED_STATUSES,
    AuditRecord,
    Decision,
    Page,
    PendingRequest,
    SessionSummary,
    StoredCheckpoint,
    WorkflowCheckpoint,
    utcnow,
)
from .delegation import Delegations
from .directory import Directory, Person
from .errors import (
    ConcurrencyError,
    HitlError,
    InputValidationError,
    NotAuthorizedError,
    RequestAlreadyHandledError,
    RequestClaimedError,
    SessionConflictError,
    SessionNotFoundError,
    StorageError,
    UnknownRequestError,
    UnknownWorkflowError,
    VoteAlreadyRecordedError,
    VoteRecorded,
)
from .escalation import Escalations
from .events.models import DEADLINE_TRACKED, EventType, make_event, tracks_deadline
from .events.publisher import EventPublisher
from .links import LinkSigner
from .notify.models import Recipient
from .notify.models import RequestView as NotifiedRequest
from .registry import StartContext, WorkflowSpec
from .serialization import decode, plain
from .serialization import encode as encode_value
from .settings import Settings
from .views import AuditRecordView, AuditView, HealthView, InboxPage, RequestView, SessionView
from .workflow.events import RequestInfoEvent, WorkflowEvent
from .workflow.policy import ApprovalPolicy, Ballot, approves, tally
from .workflow.request_info import (
    find_response_type,
    request_data_view,
    response_json_schema,
    split_entries,
)
from .workflow.runner import Phase, RunOptions, fingerprint
from .workflow.workflow import Workflow

logger = logging.getLogger("hitl_core.service")

SYSTEM_ACTOR = "system"
_PUBLISHED_MEMORY = 10_000
#: Outbox clean-ups fall due on multiples of this, so those of sessions published close together share a write.
_CLEAR_TICK_SECONDS = 0.25


@dataclass(frozen=True)
class StartResult:
    created: bool
    session: SessionView


@dataclass(frozen=True, slots=True)
class SessionRef:
    """Which session a request belongs to, for views built from inbox rows (a whole checkpoint model per
    row cost about a millisecond each, most of an inbox page)."""

    session_id: str
    workflow: str


@dataclass
class _Answer:
    """One answer waiting at a session's gate; ``recorded`` is set when another answer's write carried it."""

    call_id: str
    result: Any
    caller: Caller | None
    on_behalf_of: str | None
    recorded: asyncio.Future[StoredCheckpoint]


@dataclass
class _Gate:
    """Where answers to one session queue in this process, and the state the last one wrote."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    latest: StoredCheckpoint | None = None
    queue: list[_Answer] = field(default_factory=list)


#: How many queued votes one write may carry with its own.
MAX_VOTES_PER_WRITE = 100


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
        directory: Directory | None = None,
    ) -> None:
        self.settings = settings
        self.access = AccessPolicy(directory)
        self.directory = self.access.directory
        self.storage = storage
        self.delegations = Delegations(cast(DelegationStorage, storage), self.access)
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
        #: session -> the latest version this process published (what a clean-up may clear in place)
        self._clear_versions: dict[str, str] = {}
        #: sessions whose clean-up is due, gathered so that one write clears them all
        self._due_clears: dict[str, str | None] = {}
        self._clearing: asyncio.Task[None] | None = None
        self.outbox_clear_delay = 1.0
        #: Ids this process has published; pruned from outboxes at the next write of the session.
        self._published: OrderedDict[str, None] = OrderedDict()
        self._schema_cache: dict[tuple[str, ...], dict[str, Any]] = {}
        #: Sessions with answers in flight in this process (see ``respond``).
        self._gates: dict[str, _Gate] = {}
        self.escalations = Escalations(self)

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

    def request_schema(self, pending: PendingRequest) -> dict[str, Any]:
        """JSON Schema of the request's own type (field titles and descriptions, for readable pages)."""
        key = ("request", pending.request_type, "")
        cached = self._schema_cache.get(key)
        if cached is None:
            try:
                cached = response_json_schema(type(decode(pending.request)))
            except HitlError:
                cached = {}
            self._schema_cache[key] = cached
        return cached

    async def readable_session(self, session_id: str, caller: Caller) -> tuple[WorkflowCheckpoint, Identity]:
        """The stored session if ``caller`` may read it (else "not found") and who they are: for pages
        that show more than the session view (request schemas, claims), from one read."""
        stored, who = await self._load_visible(session_id, caller)
        assert who is not None
        return stored.checkpoint, who

    def _response_schema(self, workflow: str, pending: PendingRequest) -> dict[str, Any]:
        key = (workflow, pending.executor_id, pending.request_type, pending.response_type or "")
        cached = self._schema_cache.get(key)
        if cached is not None:
            return cached
        schema: dict[str, Any] = {}
        wf = self.workflows.get(workflow)
        executor = wf.executors.get(pending.executor_id) if wf else None
        if executor is not None:
            request = decode(pending.request)
            response_type = find_response_type(executor, type(request), request)
            if response_type is not None:
                schema = response_json_schema(response_type)
        self._schema_cache[key] = schema
        return schema

    def decide_url(self, session_id: str, call_id: str, approver: str | None = None) -> str | None:
        if self.signer is None:
            return None
        token = self.signer.sign(session_id, call_id, approver)
        return f"{self.settings.public_base_url}/api/decide?token={token}"

    async def notification_recipients(self, request: NotifiedRequest) -> list[Recipient]:
        """Who is e-mailed about a request, each with a decision link minted for them alone.

        An approver with an active delegation is replaced by their delegate (``on_behalf_of``).

        Named users and the members of named roles, through the directory, without the request's
        subject (and initiator, under separation of duties): they could not decide anyway. When
        nobody named can be e-mailed, the fallback addresses (``HITL_NOTIFY_DEFAULT_RECIPIENTS``)
        get a sign-in link, which decides as whoever signs in.
        """
        # From the event itself (approvers and subject as announced), so a notification processed
        # after the request was decided still reaches its approvers, whose link then says by whom.
        stored = await self.storage.load(request.session_id)
        excluded = {request.subject.lower()} if request.subject else set()
        if stored is not None and stored.checkpoint.metadata.get("separation_of_duties") and \
                stored.checkpoint.metadata.get("started_by"):
            excluded.add(str(stored.checkpoint.metadata["started_by"]).lower())
        users, roles = split_entries(list(request.approvers))
        people: dict[str, Person] = {}
        for user in users:
            person = await self.directory.person(user)
            if person is not None:
                people.setdefault(person.id.lower(), person)
        for role in roles:
            for person in await self.directory.members(role):
                people.setdefault(person.id.lower(), person)
        delegates = await self.delegations.active_delegates() if people else {}
        found: dict[str, Recipient] = {}
        for key, person in people.items():
            if key in excluded:
                continue
            stand_in = delegates.get(key)  # out of office: their delegate gets it (unless barred from it)
            delegate = await self.directory.person(stand_in) if stand_in and stand_in not in excluded else None
            if delegate is not None and delegate.email:
                found.setdefault(stand_in or "", Recipient(
                    email=delegate.email, person_id=stand_in, name=delegate.label, on_behalf_of=key,
                    decide_url=self.decide_url(request.session_id, request.call_id, stand_in)))
            elif person.email:
                found.setdefault(key, Recipient(email=person.email, person_id=key, name=person.label,
                                                decide_url=self.decide_url(request.session_id, request.call_id, key)))
        if found:
            return list(found.values())
            return found
        return [Recipient(email=address, decide_url=self.decide_url(request.session_id, request.call_id))
                for address in self.settings.notify_default_recipients]

    def request_view(self, cp: WorkflowCheckpoint | SessionRef, pending: PendingRequest) -> RequestView:
        """The API view of a pending request (no decision link: links are minted per recipient)."""
        holder = pending.live_claim(utcnow())
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
            subject=pending.subject,
            approval=pending.approval,
            votes=list(pending.votes),
            claimed_by=holder,
            claimed_until=pending.claimed_until if holder else None,
            status="pending",
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
                    data = self.request_view(cp, pending).model_dump(mode="json")
                    data[DEADLINE_TRACKED] = tracks_deadline(data)
                    cp.outbox.append(make_event(EventType.REQUEST_CREATED, workflow=cp.workflow,
                                                session_id=cp.session_id, call_id=pending.call_id, data=data))
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
        data[DEADLINE_TRACKED] = tracks_deadline(data)
        kind = EventType.REQUEST_EXPIRED if decision.outcome == "expired" else EventType.REQUEST_RESOLVED
        return make_event(kind, workflow=cp.workflow, session_id=cp.session_id, call_id=decision.call_id, data=data)

    def unpublished(self, outbox: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The outbox's events this process has not published yet (a write may drop the others)."""
        return [e for e in outbox if e["id"] not in self._published]

    async def save_act(self, stored: StoredCheckpoint, record: AuditRecord, *,
                       announce: bool = True) -> StoredCheckpoint | None:
        """Save ``stored.checkpoint``, changed by one audited act (a claim, a refusal, an escalation step),
        if nobody wrote the session since it was read; then publish what it announced (``announce``).
        None: another write came first: the caller reads again and redoes the act."""
        cp = stored.checkpoint
        try:
            version = await self.storage.save(cp, expected_version=stored.version, ttl_seconds=self._ttl_for(cp),
                                              audit=[record])
        except ConcurrencyError:
            return None
        saved = StoredCheckpoint.model_construct(checkpoint=cp, version=version)
        if announce:
            await self._publish(saved)
        return saved

    async def _publish(self, stored: StoredCheckpoint | None) -> None:
        """Publish the outbox of a just-saved checkpoint, then clear it in the background."""
        if stored is None:
            return
        gate = self._gates.get(stored.checkpoint.session_id)
        if gate is not None and gate.latest is not None and gate.latest.version != stored.version:
            gate.latest = None  # another act of this process wrote the session: answers queued there re-read
        if not stored.checkpoint.outbox:
            self._cancel_clear(stored.checkpoint.session_id)  # this write emptied the outbox already
            return
        events = self.unpublished(stored.checkpoint.outbox)
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
        self._schedule_clear(stored.checkpoint.session_id, stored.version)

    def _schedule_clear(self, session_id: str, version: str) -> None:
        """Remove published events from the outbox a little later, unless a write does it first.

        The next write of a session drops what this process published (see the save hook), so a
        session that is decided soon after it was started needs no clean-up write of its own. The
        time is rounded up to a tick, so the clean-ups of sessions published close together fall
        due together and a storage that can (:class:`OutboxClearing`) does them in one write.
        """
        self._clear_versions[session_id] = version
        if session_id in self._clears:
            return
        loop = asyncio.get_running_loop()
        due = math.ceil((loop.time() + self.outbox_clear_delay) / _CLEAR_TICK_SECONDS) * _CLEAR_TICK_SECONDS
        self._clears[session_id] = loop.call_at(due, self._run_clear, session_id)

    def _cancel_clear(self, session_id: str) -> None:
        handle = self._clears.pop(session_id, None)
        if handle is not None:
            handle.cancel()
        self._clear_versions.pop(session_id, None)

    def _run_clear(self, session_id: str) -> None:
        self._clears.pop(session_id, None)
        self._due_clears[session_id] = self._clear_versions.pop(session_id, None)
        if self._clearing is None:  # the timers of one tick all fire before this task runs
            self._clearing = self._in_background(self._clear_due())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task :meth:`drain` (and so :meth:`close`) waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _clear_due(self) -> None:
        """Clear every due outbox: in place and in one write where the storage can, else one by one."""
        due, self._due_clears, self._clearing = self._due_clears, {}, None
        cleared: set[str] = set()
        in_place = {sid: version for sid, version in due.items() if version is not None}
        if in_place and isinstance(self.storage, OutboxClearing):
            try:
                cleared = await self.storage.clear_outboxes(in_place)
            except StorageError as exc:
                logger.warning("clearing %d outbox(es) failed: %s", len(in_place), exc)
        for session_id in due:
            if session_id not in cleared:  # written since, or held by a continuation: read and decide
                await self._clear_outbox(session_id)

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
                remaining = self.unpublished(cp.outbox)
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
        while running := [task for task in self._background if not task.done()]:
            # only tasks still running: a finished task leaves the set by a callback the loop has not run
            # yet, and gathering finished tasks completes without yielding to it (it would spin)
            await asyncio.gather(*running, return_exceptions=True)

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

    def _options(self, caller: Caller | None, decided: set[str] | None, who: Identity | None = None,
                 actor: str | None = None, ballot_state: dict[str, Any] | None = None, **extra: Any) -> RunOptions:
        """RunOptions whose save hook writes the outbox and the audit records.

        ``who`` is the caller resolved through the directory: decisions and audit records name
        the person by directory id (the sign-in spelling only when the directory does not know it).
        """
        decided_ids = decided or set()
        ballot_state = ballot_state if ballot_state is not None else {}
        actor = actor or (who.person_id if who is not None and who.person_id else None) or \
            (caller.user if caller else None)

        def hook(cp: WorkflowCheckpoint, events: Sequence[WorkflowEvent], phase: Phase) -> Sequence[AuditRecord]:
            # what this process already published needs no second write to leave the outbox
            cp.outbox = self.unpublished(cp.outbox)
            if who is not None and who.on_behalf_of and who.person_id and phase in ("claim", "vote"):
                grant_reader(cp, who.person_id)  # a delegate who acted keeps sight of what they did
            records: list[AuditRecord] = []
            if phase == "claim":
                for decision in cp.decisions:
                    if decision.call_id in decided_ids and not decision.applied:
                        delegated = {"on_behalf_of": decision.on_behalf_of} if decision.on_behalf_of else {}
                        records.append(append_record(
                            cp, "decided" if decision.outcome == "answered" else decision.outcome,
                            call_id=decision.call_id, actor=decision.decided_by,
                            source=caller.source if caller else None,
                            detail={"result": plain(decision.result), "via": caller.via if caller else "system",
                                    **delegated},
                        ))
                        cp.outbox.append(self._resolved_event(cp, decision))
            elif phase == "cancel":
                records.append(append_record(cp, "cancelled", actor=actor,
                                             source=caller.source if caller else None))
                for decision in cp.decisions:
                    if decision.outcome == "cancelled" and decision.call_id in decided_ids:
                        cp.outbox.append(self._resolved_event(cp, decision))
            elif phase == "vote" and ballot_state.get("votes"):
                (call_id,) = decided_ids
                pending = cp.find_pending(call_id)
                for vote, progress, person, by_caller in ballot_state["votes"]:
                    voter_actor = person.person_id or (by_caller.user if by_caller else None) or actor
                    records.append(append_record(
                        cp, "voted", call_id=call_id, actor=voter_actor, source=by_caller.source if by_caller else None,
                        detail={"approve": vote["approve"], "result": vote["result"], "via": vote["via"], **progress,
                                **({"on_behalf_of": vote["voter"]} if "by" in vote else {})}))
                    if person.on_behalf_of and person.person_id:
                        grant_reader(cp, person.person_id)
                    if pending is not None:
                        data = self.request_view(cp, pending).model_dump(mode="json")
                        data["vote"] = {"voter": vote["voter"], "approve": vote["approve"], **progress}
                        cp.outbox.append(make_event(EventType.REQUEST_VOTE_RECORDED, workflow=cp.workflow,
                                                    session_id=cp.session_id, call_id=call_id, data=data,
                                                    discriminator=vote["voter"]))
            elif phase == "start":
                records.append(append_record(cp, "started", actor=actor,
                                             source=caller.source if caller else None,
                                             detail={"via": caller.via} if caller else {}))
            self._announce(cp, events, phase)
            return records

        return RunOptions(
            decided_by=actor if caller else SYSTEM_ACTOR,
            on_behalf_of=who.on_behalf_of if who is not None else None,
            decided_via=caller.via if caller else "system",
            prepare=self.access.prepare,
            save_hook=hook,
            finished_ttl_seconds=self._ttl(),
            **extra,
        )

    # ------------------------------------------------------------------ operations
    async def _may_start(self, who: Identity) -> str | None:
        """The initiator recorded for a start, or raise when the caller may not start sessions."""
        if who.client_id and who.client_id in self.settings.start_principals:
            return who.person_id or f"app:{who.client_id}"
        if self.settings.auth_mode == "easyauth" and not who.known:
            raise NotAuthorizedError("starting a session needs a signed-in person (App Service Authentication) or a "
                                     "service principal listed in HITL_START_PRINCIPALS")
        return who.person_id

    async def start(self, workflow: str, *, input: Any, session_id: str | None = None,
                    caller: Caller | None = None) -> StartResult:
        """Start a session (idempotent per session id and input)."""
        spec = self._spec(workflow)
        who = await self.access.identify(caller)
        initiator = await self._may_start(who) if caller is not None else None
        try:
            model = spec.input_model.model_validate(input)
        except ValidationError as exc:
            raise InputValidationError(workflow, _errors(exc)) from None
        if spec.prepare_input is not None:
            model = await spec.prepare_input(model, StartContext(directory=self.directory, initiator=initiator))
        digest = fingerprint({"workflow": workflow, "input": model.model_dump(mode="json")})
        sid = session_id or str(uuid.uuid4())
        existing = await self.storage.load(sid)
        if existing is not None:
            return await self._existing_start(existing, workflow, digest, who if caller is not None else None)
        opts = self._options(caller, None, who, actor=initiator, input_fingerprint=digest,
                             metadata={"started_by": initiator,
                                       "separation_of_duties": spec.separation_of_duties})
        runner = self.workflows[workflow].runner(self.storage)
        try:
            cp = await self._run(runner.start(sid, spec.start_message(model), opts, check_exists=False), opts)
        except ConcurrencyError:  # the same session id was started concurrently
            stored = await self._load(sid)
            return await self._existing_start(stored, workflow, digest, who if caller is not None else None)
        return StartResult(created=True, session=self.session_view(cp))

    async def _run(self, stream: AsyncIterator[WorkflowEvent], opts: RunOptions) -> WorkflowCheckpoint:
        """Drive an engine call that writes (start, resume) and publish what it announced."""
        await self._drive(stream, opts)
        if opts.saved is None:  # pragma: no cover - start and resume always write or raise
            raise RuntimeError("the engine finished without saving")
        return opts.saved.checkpoint

    async def _drive(self, stream: AsyncIterator[WorkflowEvent], opts: RunOptions) -> None:
        """Drive an engine call to its end, then publish what its writes announced."""
        await self._drive_quietly(stream, opts)
        await self._publish(opts.saved)

    @staticmethod
    async def _drive_quietly(stream: AsyncIterator[WorkflowEvent], opts: RunOptions) -> None:
        """Drive an engine call to its end (the caller publishes).

        A workflow that fails after its state was saved is a stored outcome (the session shows
        ``failed``), not an error of the call; storage errors and refusals before any write are.
        """
        try:
            async for _ in stream:
                pass
        except VoteRecorded:
            pass  # the vote is stored; the request waits for more (its event is in the outbox)
        except StorageError:
            raise
        except HitlError as exc:
            if opts.saved is None:
                raise
            logger.info("session %s ended in failure: %s", opts.saved.checkpoint.session_id, exc)

    async def _existing_start(self, stored: StoredCheckpoint, workflow: str, digest: str,
                              who: Identity | None) -> StartResult:
        cp = stored.checkpoint
        if who is not None and not self.access.may_read(who, cp):
            raise SessionConflictError(f"session id {json.dumps(cp.session_id)} is taken", session_id=cp.session_id)
        if cp.workflow != workflow or cp.input_fingerprint != digest:
            raise SessionConflictError(
                f"session {json.dumps(cp.session_id)} exists already with "
                f"{'another workflow' if cp.workflow != workflow else 'other input'}",
                session_id=cp.session_id,
            )
        await self._publish(stored if cp.status != "running" else None)
        return StartResult(created=False, session=self.session_view(cp))

    async def _load_visible(self, session_id: str, caller: Caller | None) -> tuple[StoredCheckpoint, Identity | None]:
        """The session if the caller may read it; otherwise "not found", so no id leaks its existence."""
        stored = await self._load(session_id)
        if caller is None:
            return stored, None
        who = await self.access.identify(caller)
        if not await self._may_read(who, stored.checkpoint):
            raise SessionNotFoundError(session_id)
        return stored, who

    async def _may_read(self, who: Identity, cp: WorkflowCheckpoint) -> bool:
        """The access rule, widened to the delegates of those who may read (while the delegation lasts)."""
        if self.access.may_read(who, cp):
            return True
        if not who.known:
            return False
        for delegator in await self.delegations.delegators(who.person_id or ""):
            absent = await self.access.identify(Caller(user=delegator, auth="system", via="system"))
            if self.access.may_read(absent, cp):
                return True
        return False

    async def _ensure_visible(self, cp: WorkflowCheckpoint, call_id: str | None, caller: Caller | None,
                              who: Identity) -> None:
        """An act on a session the caller may not see is audited, then answered "not found"."""
        if not await self._may_read(who, cp):
            await self.audit_refusal(cp.session_id, call_id, caller, "the caller may not see this session", who=who)
            raise SessionNotFoundError(cp.session_id)

    async def get_session(self, session_id: str, *, caller: Caller | None = None) -> SessionView:
        stored, _ = await self._load_visible(session_id, caller)
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

    async def authorize(self, pending: PendingRequest, caller: Caller | None, cp: WorkflowCheckpoint, *,
                        on_behalf_of: str | None = None) -> Identity:
        """The caller as a person who may decide ``pending``; raises :class:`NotAuthorizedError` otherwise."""
        who = await self.access.identify(caller)
        if caller is None or caller.via == "system":
            return who
        who = await self._decider(who, pending, cp, on_behalf_of=on_behalf_of)
        self._check_claim(cp, pending, who)
        return who

    async def _decider(self, who: Identity, pending: PendingRequest, cp: WorkflowCheckpoint, *,
                       on_behalf_of: str | None = None) -> Identity:
        """``who`` if they may decide ``pending`` themselves, else ``who`` acting for an absent approver
        who delegated to them (``Identity.on_behalf_of``); raises :class:`NotAuthorizedError` otherwise."""
        reason = self.access.refusal_to_decide(who, pending, cp)
        if reason is None and on_behalf_of is None:
            return who
        if self.access.barred(who, pending, cp) is None:
            acting = await self.delegations.acting_for(who, pending, cp, on_behalf_of=on_behalf_of)
            if acting is not None:
                return acting
            if on_behalf_of is not None:
                raise NotAuthorizedError(f"{who.label or who.person_id} does not act for {json.dumps(on_behalf_of)} "
                                         f"on request {json.dumps(pending.call_id)}: no active delegation to them "
                                         "from an approver who may still decide it")
        raise NotAuthorizedError(reason or "not authorised")

    @staticmethod
    def _check_claim(cp: WorkflowCheckpoint, pending: PendingRequest, who: Identity) -> None:
        """While someone else's claim lasts, only they may answer (unless the policy lets others)."""
        holder = pending.live_claim(utcnow())
        if holder is None or holder == who.person_id:
            return
        if (pending.approval or {}).get("others_may_answer_claimed"):
            return
        until = pending.claimed_until.isoformat() if pending.claimed_until else ""
        raise RequestClaimedError(pending.call_id, holder, until, session_id=cp.session_id)

    async def claim(self, session_id: str, call_id: str, *, caller: Caller, release: bool = False) -> RequestView:
        """Claim a pending request for ``HITL_CLAIM_SECONDS`` (renewable), or release one's claim.

        Only someone who may decide the request may claim it; a live claim of someone else
        answers 409; the claimer (or an admin) releases. Each is one conditional write, audited
        and announced (``hitl.request.claimed``).
        """
        who = await self.access.identify(caller)
        while True:
            stored = await self._load(session_id)
            cp = stored.checkpoint
            await self._ensure_visible(cp, call_id, caller, who)
            pending = cp.find_pending(call_id)
            if pending is None:
                decision = cp.find_decision(call_id)
                if decision is not None:
                    raise RequestAlreadyHandledError(call_id, decision.view(), session_id=session_id)
                raise UnknownRequestError(call_id, cp.pending_call_ids(), session_id=session_id)
            now = utcnow()
            holder = pending.live_claim(now)
            if release:
                if holder is None:
                    return self.request_view(cp, pending)  # nothing to release: already free
                if holder != who.person_id and not who.is_any(ADMINS):
                    refusal = f"{who.label or 'an anonymous caller'} may not release the claim of {holder}"
                    await self.audit_refusal(session_id, call_id, caller, refusal, who=who)
                    raise NotAuthorizedError(refusal)
                pending.claimed_by, pending.claimed_until = None, None
                action, detail = "released", {"claimed_by": holder}
            else:
                try:
                    await self._decider(who, pending, cp)
                except NotAuthorizedError as exc:
                    await self.audit_refusal(session_id, call_id, caller, str(exc), who=who)
                    raise
                if holder is not None and holder != who.person_id:
                    assert pending.claimed_until is not None
                    raise RequestClaimedError(call_id, holder, pending.claimed_until.isoformat(),
                                              session_id=session_id)
                pending.claimed_by = who.person_id
                pending.claimed_until = now + dt.timedelta(seconds=self.settings.claim_seconds)
                action, detail = "claimed", {"until": pending.claimed_until.isoformat()}
            record = append_record(cp, action, call_id=call_id, actor=who.person_id, source=caller.source,
                                   detail=detail)
            data = self.request_view(cp, pending).model_dump(mode="json")
            cp.outbox.append(make_event(EventType.REQUEST_CLAIMED, workflow=cp.workflow, session_id=session_id,
                                        call_id=call_id, data={**data, "action": action},
                                        discriminator=f"{action}:{record.seq}"))
            cp.updated_at = now
            if await self.save_act(stored, record) is not None:
                return self.request_view(cp, pending)

    async def decider(self, session_id: str, call_id: str, caller: Caller, *,
                      checkpoint: WorkflowCheckpoint | None = None) -> Identity:
        """Who ``caller`` would decide the pending request as (themselves, or as a delegate: see
        ``Identity.on_behalf_of``); raises :class:`NotAuthorizedError` when they may not. Reads only
        (nothing at all when the caller passes the ``checkpoint`` it has just read)."""
        cp = checkpoint if checkpoint is not None else (await self._load(session_id)).checkpoint
        pending = cp.find_pending(call_id)
        if pending is None:
            raise NotAuthorizedError(f"request {json.dumps(call_id)} is not pending")
        return await self._decider(await self.access.identify(caller), pending, cp)

    async def may_decide(self, session_id: str, call_id: str, caller: Caller) -> str | None:
        """Why ``caller`` may not decide the pending request (None: they may). Reads only."""
        try:
            await self.decider(session_id, call_id, caller)
        except NotAuthorizedError as exc:
            return str(exc)
        return None

    async def respond(self, session_id: str, call_id: str, result: Any, *, caller: Caller | None = None,
                      on_behalf_of: str | None = None) -> SessionView:
        """Apply a person's decision; exactly one concurrent decision wins.

        A delegate decides for an absent approver (``on_behalf_of``, or the one who may): see
        :mod:`hitl_core.delegation`.

        Answers to one session from this process queue at its :class:`_Gate` instead of racing each
        other's conditional writes (50 approvers voting at once would otherwise lose most writes and
        re-read each time); each starts from the state the previous one wrote. Another process's write
        still makes the conditional write fail and the engine re-read, as before.
        """
        gate = self._gates.setdefault(session_id, _Gate())
        gate.users += 1
        me = _Answer(call_id, result, caller, on_behalf_of, asyncio.get_running_loop().create_future())
        gate.queue.append(me)
        announced: StoredCheckpoint | None = None
        try:
            async with gate.lock:
                if me.recorded.done():  # a vote before this one carried it in its write (and published it)
                    return self.session_view(me.recorded.result().checkpoint)
                gate.queue.remove(me)
                stored, gate.latest = gate.latest or await self._load(session_id), None
                followers = [a for a in gate.queue if a.call_id == call_id][:MAX_VOTES_PER_WRITE]
                opts, carried = await self._respond(stored, call_id, result, caller, on_behalf_of, followers)
                saved = opts.saved
                assert saved is not None
                for answer in carried:  # their votes are in this write: they return without one of their own
                    gate.queue.remove(answer)
                    answer.recorded.set_result(saved)
                view = self.session_view(saved.checkpoint)
                # what this write announced, on a list of its own: the next answer may add to the outbox
                announced = StoredCheckpoint.model_construct(
                    checkpoint=saved.checkpoint.model_copy(update={"outbox": list(saved.checkpoint.outbox)}),
                    version=saved.version)
                if gate.users > 1:  # someone is queued: they start from this write
                    gate.latest = saved
        finally:
            if me in gate.queue:
                gate.queue.remove(me)
            gate.users -= 1
            if not gate.users:
                del self._gates[session_id]
        self._publish_after_answering(announced)
        return view

    def _publish_after_answering(self, stored: StoredCheckpoint | None) -> None:
        """Publish what a decision announced once its caller has the answer.

        Why not before: the events are in the outbox of the write that was just committed, so they
        are durable already, and a publish is a round trip to the topic that the person deciding
        would wait for. If the process ends first, the next read of the session or the
        ``sweep_outbox`` timer publishes them (same ids); :meth:`close` waits for the ones under way.
        """
        self._in_background(self._publish(stored))

    async def _respond(self, stored: StoredCheckpoint, call_id: str, result: Any, caller: Caller | None,
                       on_behalf_of: str | None, followers: Sequence[_Answer] = ()) -> tuple[RunOptions, list[_Answer]]:
        """One answer, authorised on ``stored`` and applied by the engine (not yet published).

        When it is a vote that leaves the request pending, the queued votes of ``followers`` that are
        authorised, valid, not duplicates and still leave it pending go into the same conditional
        write (returned as carried). Any other answer — a refusal, a duplicate, the vote that resolves
        the request — takes its own turn, so every error and every decision is its own caller's.
        """
        cp = stored.checkpoint
        session_id = cp.session_id
        runner = self.workflows.get(cp.workflow)
        if runner is None:
            raise UnknownWorkflowError(cp.workflow, list(self.specs))
        who = await self.access.identify(caller)
        if caller is not None and caller.via != "system":
            await self._ensure_visible(cp, call_id, caller, who)
        pending = cp.find_pending(call_id)
        if pending is not None:
            try:
                who = await self.authorize(pending, caller, cp, on_behalf_of=on_behalf_of)
            except NotAuthorizedError as exc:
                await self.audit_refusal(session_id, call_id, caller, str(exc), who=who)
                raise
        ballot_state: dict[str, Any] = {}
        opts = self._options(caller, {call_id}, who, ballot_state=ballot_state)
        opts.preloaded = stored  # authorised on this read: the engine's claim starts from it
        carried: list[_Answer] = []
        engine = runner.runner(self.storage)
        if pending is not None and pending.approval is not None:
            candidates = await self._candidates(engine, cp, pending, followers)
            opts.ballot = await self._ballot(session_id, call_id, pending, who, caller, ballot_state,
                                             candidates, carried)
        await self._drive_quietly(engine.resume(session_id, {call_id: result}, opts), opts)
        if opts.saved is None:  # pragma: no cover - a resume always writes or raises
            raise RuntimeError("the engine finished without saving")
        return opts, carried

    async def _candidates(self, engine: Any, cp: WorkflowCheckpoint, pending: PendingRequest,
                          followers: Sequence[_Answer]) -> list[tuple[_Answer, Identity, Any]]:
        """Queued votes that may ride along: visible to their caller, authorised, of the right type."""
        ready: list[tuple[_Answer, Identity, Any]] = []
        for answer in followers:
            if answer.caller is None or answer.caller.via == "system":
                continue
            try:
                who = await self.access.identify(answer.caller)
                if not await self._may_read(who, cp):
                    continue
                who = await self.authorize(pending, answer.caller, cp, on_behalf_of=answer.on_behalf_of)
                value = engine.validate_answer(pending, answer.result, cp.session_id)
            except HitlError:
                continue  # it takes its own turn, which reports (and audits) the refusal
            ready.append((answer, who, value))
        return ready

    async def _ballot(self, session_id: str, call_id: str, pending: PendingRequest, who: Identity,
                      caller: Caller | None, state: dict[str, Any],
                      candidates: Sequence[tuple[_Answer, Identity, Any]] = (),
                      carried: list[_Answer] | None = None) -> Any:
        """The engine's ballot hook for one vote: counts it on the freshly loaded request (see RunOptions.ballot),
        then — while the request stays pending — the queued ``candidates`` that can share its write."""
        policy = ApprovalPolicy.model_validate(pending.approval)
        users, roles = split_entries(pending.approvers)
        eligible = await self._eligible(users, roles, pending)
        needed = policy.needed(len(users))

        def cast(person: Identity, by_caller: Caller | None, value: Any) -> dict[str, Any]:
            answer = plain(encode_value(value))
            return {"voter": person.on_behalf_of or person.person_id or (by_caller.user if by_caller else None)
                    or SYSTEM_ACTOR, "approve": approves(answer, policy.decision_field), "result": answer,
                    "at": utcnow().isoformat(), "via": by_caller.via if by_caller else "system",
                    **({"by": person.person_id} if person.on_behalf_of else {})}

        def count(votes: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
            outcome = tally(policy, [Ballot(str(v["voter"]), bool(v["approve"])) for v in votes],
                            named_users=len(users), eligible=eligible)
            return outcome, {"approvals": sum(1 for v in votes if v["approve"]), "needed": needed, "outcome": outcome}

        def ballot(cp: WorkflowCheckpoint, fresh: PendingRequest, value: Any) -> tuple[bool, list[dict[str, Any]]]:
            vote = cast(who, caller, value)
            first = next((v for v in fresh.votes if v.get("voter") == vote["voter"]), None)
            if first is not None:
                raise VoteAlreadyRecordedError(call_id, first, session_id=session_id)
            counted = [*fresh.votes, vote]
            outcome, progress = count(counted)
            state["votes"] = [(vote, progress, who, caller)]
            if carried is not None:
                carried.clear()  # counted again from scratch when a lost write brings a fresh read
            for answer, person, answer_value in candidates if outcome == "pending" else ():
                extra = cast(person, answer.caller, answer_value)
                if any(v.get("voter") == extra["voter"] for v in counted):
                    continue  # a second vote: its own turn answers 409 with the first
                trial = [*counted, extra]
                extra_outcome, extra_progress = count(trial)
                if extra_outcome != "pending":
                    break  # the vote that resolves the request is decided in its own turn, as its own caller's
                counted = trial
                state["votes"].append((extra, extra_progress, person, answer.caller))
                if carried is not None:
                    carried.append(answer)
            return outcome != "pending", counted

        return ballot

    async def _eligible(self, users: list[str], roles: list[str], pending: PendingRequest) -> int | None:
        """How many distinct people may vote (None when a role's members are unknown to the directory)."""
        people = set(users)
        for role in roles:
            members = await self.directory.members(role)
            if not members:
                return None
            people.update(m.id.lower() for m in members)
        people.discard(pending.subject or "")
        return len(people)

    async def audit_refusal(self, session_id: str, call_id: str | None, caller: Caller | None, reason: str, *,
                            who: Identity | None = None) -> bool:
        """A refused attempt is audited; the request itself stays exactly as it was.

        At most ``HITL_REFUSAL_AUDIT_LIMIT`` refusals per request per hour are written, so a
        stream of refused attempts cannot flood the audit trail; answers whether one was written.
        """
        if who is None and caller is not None:
            who = await self.access.identify(caller)
        actor = (who.person_id if who is not None and who.person_id else None) or (caller.user if caller else None)
        for _ in range(5):
            stored = await self.storage.load(session_id)
            if stored is None:
                return False
            cp = stored.checkpoint
            if not _count_refusal(cp, call_id, self.settings.refusal_audit_limit):
                logger.warning("refusal on %s/%s not audited: over HITL_REFUSAL_AUDIT_LIMIT this hour",
                               session_id, call_id)
                return False
            detail: dict[str, Any] = {"reason": reason, "via": caller.via if caller else "system"}
            record = append_record(cp, "refused", call_id=call_id, actor=actor,
                                   source=caller.source if caller else None, detail=detail)
            if await self.save_act(stored, record, announce=False) is not None:
                return True
        return False

    async def cancel(self, session_id: str, *, caller: Caller | None = None) -> SessionView:
        stored = await self._load(session_id)
        cp = stored.checkpoint
        who = await self.access.identify(caller) if caller is not None else None
        if who is not None:
            await self._ensure_visible(cp, None, caller, who)
        if who is not None and not self.access.may_cancel(who, cp):
            reason = (f"{who.label or 'an anonymous caller'} may not cancel session {json.dumps(session_id)}: only "
                      "its initiator or the admins role may")
            await self.audit_refusal(session_id, None, caller, reason, who=who)
            raise NotAuthorizedError(reason)
        workflow = self.workflows.get(cp.workflow)
        if workflow is None:
            raise UnknownWorkflowError(cp.workflow, list(self.specs))
        opts = self._options(caller, set(cp.pending_call_ids()), who)
        await workflow.runner(self.storage).cancel(session_id, opts)
        await self._publish(opts.saved)
        assert opts.saved is not None
        return self.session_view(opts.saved.checkpoint)

    async def _inbox_keys(self, caller: Caller | None, scope: str, assignee: str | None
                          ) -> tuple[list[str], dict[str, Any] | None]:
        """Whom the caller acts for, and the storage filter their inbox is (None: nothing to list).

        The caller sees what their own keys (``user:`` and each ``role:``) and the active delegations
        to them name; ``scope="all"`` or an explicit ``assignee`` is for admins and auditors only."""
        if caller is None:
            return [], {"assignee": assignee}
        who = await self.access.identify(caller)
        wide = who.is_any(ADMINS, AUDITORS)
        if (scope == "all" or assignee is not None) and not wide:
            raise NotAuthorizedError("only the admins and auditors roles may list other people's requests")
        if scope == "all" or assignee is not None:
            return [], {"assignee": assignee}
        acting_for, keys = await self.delegations.inbox_keys(who)
        assignees = list(dict.fromkeys(who.assignee_keys() + keys))
        return acting_for, ({"assignees": assignees} if assignees else None)

    async def inbox(self, *, workflow: str | None = None, assignee: str | None = None,
                    continuation: str | None = None, limit: int = 50, caller: Caller | None = None,
                    scope: str = "mine", claimed_by: str | None = None,
                    due_before: dt.datetime | None = None, count: bool = False) -> InboxPage:
        """What the caller may decide (``scope="all"``: every pending request, admins and auditors only),
        optionally only what ``claimed_by`` holds a live claim on, or what is due before ``due_before``;
        ``count`` adds ``total``, the number of requests over all pages (one more, counting, query)."""
        totals = {"total": {"claimed_by": claimed_by, "due_before": due_before}} if count else {}
        page, counts = await self.inbox_and_counts(
            totals, workflow=workflow, assignee=assignee, continuation=continuation, limit=limit, caller=caller,
            scope=scope, claimed_by=claimed_by, due_before=due_before)
        return page.model_copy(update={"total": counts["total"]}) if count else page

    async def inbox_and_counts(self, counts: dict[str, dict[str, Any]], *, workflow: str | None = None,
                               assignee: str | None = None, continuation: str | None = None, limit: int = 50,
                               caller: Caller | None = None, scope: str = "mine", claimed_by: str | None = None,
                               due_before: dt.datetime | None = None) -> tuple[InboxPage, dict[str, int]]:
        """A page of :meth:`inbox` and, for each named filter set of ``counts`` (``claimed_by``,
        ``due_before``; ``workflow`` applies to all), how many requests match over all pages: one count
        query each, the caller's keys and delegations resolved once for the page and every count."""
        acting_for, keys = await self._inbox_keys(caller, scope, assignee)
        if keys is None:
            return InboxPage(items=[], continuation=None), dict.fromkeys(counts, 0)
        page = await self.storage.list_pending_requests(workflow=workflow, claimed_by=claimed_by, due_before=due_before,
                                                        continuation=continuation, limit=limit, **keys)
        items = [self.request_view(SessionRef(e.session_id, e.workflow), e.request) for e in page.items]
        numbers = {name: await self.storage.count_pending_requests(workflow=workflow, **filters, **keys)
                   for name, filters in counts.items()}
        return InboxPage(items=items, continuation=page.continuation, on_behalf_of=acting_for), numbers

    async def history(self, person: str, *, continuation: str | None = None, limit: int = 50
                      ) -> Page[SessionSummary]:
        """The sessions ``person`` started, decided, voted in or acted for someone in, by session id:
        a walk of the storage's per-person index (``list_sessions(participant=...)``), never a scan."""
        return await self.storage.list_sessions(participant=person, continuation=continuation, limit=limit)

    async def audit(self, session_id: str, *, verify: bool = False, caller: Caller | None = None) -> AuditView:
        if caller is not None:
            await self._load_visible(session_id, caller)
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

    # Deadlines (reminders, escalations, auto-answers, expiry) are self.escalations: hitl_core/escalation.py.
    async def close(self) -> None:
        await self.drain()
        await self.publisher.close()
        await self.storage.close()
        await self.directory.close()


def _count_refusal(cp: WorkflowCheckpoint, call_id: str | None, limit: int) -> bool:
    """Count a refusal against the request's hourly allowance; False when it is used up."""
    windows: dict[str, Any] = cp.metadata.setdefault("refusals", {})
    key = call_id or "-"
    now = utcnow()
    start, count = windows.get(key, [now.isoformat(), 0])
    if dt.datetime.fromisoformat(start) <= now - dt.timedelta(hours=1):
        start, count = now.isoformat(), 0
    if count >= limit:
        return False
    windows[key] = [start, count + 1]
    return True


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
