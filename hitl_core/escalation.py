"""Escalation chains: what happens to a request, step by step, while nobody decides it.

A request's chain is read by :func:`escalation_chain`, the one place that knows both forms:

* an :class:`~hitl_core.workflow.policy.ApprovalPolicy` with ``escalation`` steps (the chain as
  declared: each step due ``after_seconds`` after the previous one was applied, the first after
  the request's creation);
* the older ``deadline`` + ``timeout_policy``: ``expire`` or ``auto_respond`` is one step due at
  the deadline; ``escalate`` is an escalation at the deadline, then ``then`` (``expire`` or
  ``auto_respond``; anything else expires) ``extend_seconds`` later.

Where the walk is, lives on the pending request, in ``pending.policy``: ``step`` (index of the next
step) and ``step_base`` (ISO time the next step's delay counts from). Before any step was applied
the chain is placed so that its first step that takes the request away (escalate, auto_respond,
expire) falls at the request's ``deadline`` (a chain declared without one gets it computed at
creation), else it starts at the request's creation.

:class:`Escalations` plans and applies steps. Applying step ``i`` is one conditional write of
the session (retried on a conflict), audited and announced, and happens at most once: when the
stored next step is not ``i`` (a retried activity, a racing process) it changes nothing and
answers the current plan. The request's ``deadline`` shown to reviewers is always the time of the
next step that takes it away from its current approvers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .access import Caller, grant_access
from .audit import append_record
from .checkpoint.models import Decision, PendingRequest, WorkflowCheckpoint, utcnow
from .errors import RequestAlreadyHandledError, ResponseValidationError
from .events.models import EventType, make_event
from .workflow.policy import ApprovalPolicy, EscalationStep, first_deadline_offset
from .workflow.request_info import USER_PREFIX, approver_entries, split_entries

if TYPE_CHECKING:
    from .service import HitlService

logger = logging.getLogger("hitl_core.escalation")

#: Keys of the walk's progress in ``PendingRequest.policy``.
STEP_KEY = "step"
BASE_KEY = "step_base"
SYSTEM_ACTOR = "system"
AUTO_RESPOND_ACTOR = "system:auto_respond"
#: Outcomes after which the request is no longer pending.
FINAL_OUTCOMES = frozenset({"decided", "expired", "auto_responded"})


def _legacy_step(**values: Any) -> EscalationStep:
    """A step read from an older ``timeout_policy``: validated when it can be, kept as written otherwise
    (an odd legacy default or an escalation without targets behaves as it did)."""
    try:
        return EscalationStep(**values)
    except ValidationError:
        return EscalationStep.model_construct(**values)


def escalation_chain(pending: PendingRequest, *, extend_default_seconds: int = 86400) -> list[EscalationStep]:
    """The effective escalation chain of a pending request, from either form (see the module docstring).

    ``extend_default_seconds``: the legacy escalation's ``extend_seconds`` when the policy names none
    (the service passes ``HITL_REMINDER_INTERVAL_SECONDS``, as before).
    """
    declared = (pending.approval or {}).get("escalation")
    if declared:
        return list(ApprovalPolicy.model_validate(pending.approval).escalation)
    if pending.deadline is None:
        return []
    policy = pending.policy
    at = max(0, math.ceil((pending.deadline - pending.created_at).total_seconds()))

    def final(action: Any, after: int) -> EscalationStep:
        if action == "auto_respond":
            return _legacy_step(after_seconds=after, action="auto_respond", answer=policy.get("default"))
        return _legacy_step(after_seconds=after, action="expire")

    action = policy.get("action", "expire")
    if action != "escalate":
        return [final(action, at)]
    extend = max(0, int(policy.get("extend_seconds", extend_default_seconds)))
    escalate_to = policy.get("escalate_to")
    to = approver_entries(escalate_to if escalate_to is not None else pending.approvers)
    return [_legacy_step(after_seconds=at, action="escalate", to=to, mode="replace"),
            final(policy.get("then", "expire"), extend)]


def _parse(value: Any) -> dt.datetime | None:
    if not value:
        return None
    moment = dt.datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def progress(pending: PendingRequest, chain: list[EscalationStep]) -> tuple[int, dt.datetime]:
    """(index of the next step, the time its delay counts from)."""
    state = pending.policy
    if STEP_KEY in state:
        return int(state[STEP_KEY]), _parse(state.get(BASE_KEY)) or pending.created_at
    index = 1 if state.get("escalated") and len(chain) > 1 else 0  # escalated by an older version
    offset = first_deadline_offset(chain[index:])
    if pending.deadline is not None and offset is not None:
        return index, pending.deadline - dt.timedelta(seconds=offset)
    return index, pending.created_at


def next_deadline(chain: list[EscalationStep], index: int, base: dt.datetime) -> dt.datetime | None:
    """When the first step from ``index`` on that takes the request away is due (None: there is none)."""
    offset = first_deadline_offset(chain[index:])
    return None if offset is None else base + dt.timedelta(seconds=offset)


@dataclass(frozen=True)
class StepPlan:
    """The next step of a request's chain and when it is due."""

    index: int
    at: dt.datetime
    action: str
    of: int

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "at": self.at.isoformat(), "action": self.action, "of": self.of}


@dataclass(frozen=True)
class StepOutcome:
    """What applying a step did.

    ``outcome``: ``reminded``, ``escalated``, ``escalation_skipped`` (nobody to escalate to),
    ``auto_respond_failed`` (the declared answer was refused), ``auto_responded``, ``expired``;
    ``decided`` (the request is no longer pending); ``skipped`` (the step was not the next one:
    applied already, nothing changed); ``finished`` (no step left). ``deadline``: the request's
    deadline afterwards; ``next``: the step now due next.
    """

    outcome: str
    index: int | None = None
    deadline: dt.datetime | None = None
    next: StepPlan | None = None

    @property
    def final(self) -> bool:
        return self.outcome in FINAL_OUTCOMES

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "index": self.index,
                "deadline": self.deadline.isoformat() if self.deadline else None,
                "next": self.next.as_json() if self.next else None}


class Escalations:
    """Plans and applies the escalation steps of the service's requests (and its periodic reminders)."""

    def __init__(self, service: HitlService) -> None:
        self.service = service

    # ------------------------------------------------------------------ reading
    def chain(self, pending: PendingRequest) -> list[EscalationStep]:
        return escalation_chain(pending, extend_default_seconds=self.service.settings.reminder_interval_seconds)

    def plan_of(self, pending: PendingRequest) -> StepPlan | None:
        """The next step of a pending request (None: its chain is walked to the end, or it has none)."""
        chain = self.chain(pending)
        index, base = progress(pending, chain)
        if index >= len(chain):
            return None
        step = chain[index]
        return StepPlan(index=index, at=base + dt.timedelta(seconds=step.after_seconds), action=step.action,
                        of=len(chain))

    async def plan(self, session_id: str, call_id: str) -> StepPlan | None:
        """The next step of a still-pending request and when it is due (None: decided, or nothing left)."""
        stored = await self.service.storage.load(session_id)
        pending = stored.checkpoint.find_pending(call_id) if stored else None
        return self.plan_of(pending) if pending is not None else None

    # ------------------------------------------------------------------ periodic reminders
    async def remind(self, session_id: str, call_id: str, number: int) -> bool:
        """Announce reminder ``number`` of a still-pending request (False if it was decided meanwhile)."""
        svc = self.service
        stored = await svc.storage.load(session_id)
        if stored is None:
            return False
        cp = stored.checkpoint
        pending = cp.find_pending(call_id)
        if pending is None:
            return False
        data = svc.request_view(cp, pending).model_dump(mode="json")
        data["reminder_number"] = number
        await svc.publisher.publish([make_event(EventType.REQUEST_REMINDER, workflow=cp.workflow,
                                                session_id=session_id, call_id=call_id, data=data,
                                                discriminator=str(number))])
        return True

    # ------------------------------------------------------------------ applying
    async def apply(self, session_id: str, call_id: str, index: int | None = None) -> StepOutcome:
        """Apply step ``index`` of the request's chain (None: whichever is next), at most once."""
        svc = self.service
        wanted = index
        while True:
            stored = await svc.storage.load(session_id)
            pending = stored.checkpoint.find_pending(call_id) if stored is not None else None
            if stored is None or pending is None:
                return StepOutcome("decided", wanted)
            cp = stored.checkpoint
            chain = self.chain(pending)
            current = progress(pending, chain)[0]
            if wanted is None:
                wanted = current  # fixed now: a retry after a conflict must not apply the step after it
            if current >= len(chain):
                return StepOutcome("finished", wanted, pending.deadline)
            if wanted != current:
                return StepOutcome("skipped", wanted, pending.deadline, self.plan_of(pending))
            step = chain[current]
            if step.action == "auto_respond":
                outcome = await self._auto_respond(session_id, call_id, current, step)
                if outcome is not None:
                    return outcome
                continue  # the answer was refused and recorded, or a conflict: read again
            cp.outbox = svc.unpublished(cp.outbox)
            now = utcnow()
            if step.action == "expire":
                result = self._expire(cp, pending, current, chain, now)
            elif step.action == "escalate":
                result = await self._escalate(cp, pending, current, chain, step, now)
            else:
                result = self._remind_step(cp, pending, current, chain, now)
            outcome, record = result
            cp.updated_at = now
            if await svc.save_act(stored, record) is not None:
                return outcome

    @staticmethod
    def _advance(pending: PendingRequest, chain: list[EscalationStep], index: int,
                 now: dt.datetime) -> dt.datetime | None:
        """Record that step ``index`` was applied now; the request's deadline becomes the next take-away step."""
        pending.policy = {**pending.policy, STEP_KEY: index + 1, BASE_KEY: now.isoformat()}
        pending.deadline = next_deadline(chain, index + 1, now)
        return pending.deadline

    def _after(self, outcome: str, pending: PendingRequest, index: int) -> StepOutcome:
        return StepOutcome(outcome, index, pending.deadline, self.plan_of(pending))

    @staticmethod
    def _step_info(index: int, chain: list[EscalationStep], step: EscalationStep) -> dict[str, Any]:
        """How an event or audit record names the step: ``step`` counts from 1, ``index`` from 0."""
        return {"step": index + 1, "index": index, "of": len(chain), "action": step.action}

    def _remind_step(self, cp: WorkflowCheckpoint, pending: PendingRequest, index: int,
                     chain: list[EscalationStep], now: dt.datetime) -> tuple[StepOutcome, Any]:
        info = self._step_info(index, chain, chain[index])
        self._advance(pending, chain, index, now)
        record = append_record(cp, "reminded", call_id=pending.call_id, actor=SYSTEM_ACTOR, source="deadline",
                               detail={**info, "approvers": list(pending.approvers)})
        data = self.service.request_view(cp, pending).model_dump(mode="json")
        data["escalation"] = info
        cp.outbox.append(make_event(EventType.REQUEST_REMINDER, workflow=cp.workflow, session_id=cp.session_id,
                                    call_id=pending.call_id, data=data, discriminator=f"step-{index}"))
        return self._after("reminded", pending, index), record

    async def _managers(self, pending: PendingRequest) -> list[str]:
        """``user:`` entries of the directory managers of the request's user approvers (never its subject)."""
        directory = self.service.directory
        users, _ = split_entries(list(pending.approvers))
        found: dict[str, None] = {}
        for user in users:
            person = await directory.person(user)
            manager = await directory.manager_of(person.id) if person is not None else None
            if manager is not None and manager.id.lower() != (pending.subject or ""):
                found[USER_PREFIX + manager.id.lower()] = None
        return list(found)

    async def _escalate(self, cp: WorkflowCheckpoint, pending: PendingRequest, index: int,
                        chain: list[EscalationStep], step: EscalationStep,
                        now: dt.datetime) -> tuple[StepOutcome, Any]:
        svc = self.service
        info = self._step_info(index, chain, step)
        previous = list(pending.approvers)
        missed = pending.deadline
        managers = await self._managers(pending) if step.managers else []
        targets = approver_entries([*step.to, *managers])
        if not targets:  # top of the hierarchy: nobody to escalate to; the walk goes on
            self._advance(pending, chain, index, now)
            reason = (f"the directory names no manager for {', '.join(previous) or 'the approvers'}"
                      if step.managers else "the step names nobody to escalate to")
            record = append_record(cp, "escalation_skipped", call_id=pending.call_id, actor=SYSTEM_ACTOR,
                                   source="deadline", detail={**info, "reason": reason, "from": previous})
            return self._after("escalation_skipped", pending, index), record
        pending.approvers = approver_entries([*previous, *targets] if step.mode == "add" else targets)
        await svc.access.resolve_request(pending)
        grant_access(cp, [pending])
        deadline = self._advance(pending, chain, index, now)
        detail = {**info, "mode": step.mode, "from": previous, "to": list(pending.approvers),
                  "deadline": deadline.isoformat() if deadline else None}
        if step.managers:
            detail["managers"] = managers
        record = append_record(cp, "escalated", call_id=pending.call_id, actor=SYSTEM_ACTOR, source="deadline",
                               detail=detail)
        data = svc.request_view(cp, pending).model_dump(mode="json")
        data["escalated_from"] = previous
        data["escalation"] = {**info, "mode": step.mode, "from": previous, "to": list(pending.approvers),
                              "missed_deadline": missed.isoformat() if missed else None}
        cp.outbox.append(make_event(EventType.REQUEST_ESCALATED, workflow=cp.workflow, session_id=cp.session_id,
                                    call_id=pending.call_id, data=data, discriminator=f"step-{index}"))
        return self._after("escalated", pending, index), record

    def _expire(self, cp: WorkflowCheckpoint, pending: PendingRequest, index: int,
                chain: list[EscalationStep], now: dt.datetime) -> tuple[StepOutcome, Any]:
        svc = self.service
        call_id = pending.call_id
        cp.pending_requests.remove(pending)
        decision = Decision(call_id=call_id, request_type=pending.request_type, result=None,
                            decided_by=SYSTEM_ACTOR, decided_at=now, applied=True, outcome="expired",
                            request=pending.request, executor_id=pending.executor_id,
                            request_executor_id=pending.request_executor_id)
        cp.decisions.append(decision)
        record = append_record(cp, "expired", call_id=call_id, actor=SYSTEM_ACTOR, source="deadline",
                               detail={"deadline": pending.deadline.isoformat() if pending.deadline else None,
                                       **self._step_info(index, chain, chain[index])})
        cp.outbox.append(svc._resolved_event(cp, decision))
        if not cp.pending_requests and cp.status == "pending":
            cp.status = "failed"
            cp.error = f"request {json.dumps(call_id)} expired at its deadline without a decision"
            cp.outbox.append(make_event(EventType.SESSION_FAILED, workflow=cp.workflow, session_id=cp.session_id,
                                        call_id=None, data=svc.session_view(cp).model_dump(mode="json")))
        return StepOutcome("expired", index), record

    async def _auto_respond(self, session_id: str, call_id: str, index: int,
                            step: EscalationStep) -> StepOutcome | None:
        """Answer with the step's declared answer, as a system caller (the answer is its own conditional write).

        None: the answer was refused (recorded, the walk goes on) or the request changed: read again.
        """
        svc = self.service
        caller = Caller(user=AUTO_RESPOND_ACTOR, source="deadline", via="system", auth="system")
        try:
            view = await svc.respond(session_id, call_id, step.answer, caller=caller)
        except RequestAlreadyHandledError:
            return StepOutcome("decided", index)
        except ResponseValidationError as exc:
            logger.warning("the auto_respond answer of %s/%s was refused: %s", session_id, call_id, exc)
            return await self._advance_with(session_id, call_id, index, "auto_respond_failed", {"reason": str(exc)})
        if any(p.call_id == call_id for p in view.pending_requests):
            # counted as one vote of a quorum: the request waits for more; this step is done
            return await self._advance_with(session_id, call_id, index, "auto_respond_voted", {})
        return StepOutcome("auto_responded", index)

    async def _advance_with(self, session_id: str, call_id: str, index: int, action: str,
                            detail: dict[str, Any]) -> StepOutcome | None:
        """Mark step ``index`` applied with an audit record of its own (one conditional write)."""
        svc = self.service
        while True:
            stored = await svc.storage.load(session_id)
            pending = stored.checkpoint.find_pending(call_id) if stored is not None else None
            if stored is None or pending is None:
                return StepOutcome("decided", index)
            cp = stored.checkpoint
            chain = self.chain(pending)
            if progress(pending, chain)[0] != index:
                return None  # someone else moved the walk on: the caller reads the current plan
            now = utcnow()
            self._advance(pending, chain, index, now)
            cp.outbox = svc.unpublished(cp.outbox)
            record = append_record(cp, action, call_id=call_id, actor=SYSTEM_ACTOR, source="deadline",
                                   detail={**self._step_info(index, chain, chain[index]), **detail})
            cp.updated_at = now
            if await svc.save_act(stored, record, announce=False) is not None:
                return self._after(action, pending, index)
