"""Escalation chains: the model, the effective chain of both request forms, and walks of real chains.

The walks run the app in the in-process devhost: the service publishes to the local Event Grid
topic, ``track_deadlines`` starts the ``request_deadline`` orchestration (the real
azure-functions-durable SDK, replayed by the local Durable runtime), its activities apply the
steps, and a decision raises ``decided`` through the same trigger. People are the demo directory's
(devhost/demo-directory.json: erin's manager is amy, amy's is mona, mona has none).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel, ValidationError

import workflows
from devhost.durable import LocalDurableRuntime, reset_durable_sdk_session
from devhost.server import DevHost
from hitl_core import (
    ApprovalPolicy,
    CheckpointStorage,
    Executor,
    RequestInfoExecutor,
    RequestInfoMessage,
    RequestResponse,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
)
from hitl_core.access import Caller
from hitl_core.checkpoint.models import PendingRequest
from hitl_core.escalation import escalation_chain, progress
from hitl_core.functions import configure, get_runtime
from hitl_core.functions.durable import ORCHESTRATOR_NAME, deadline_input
from hitl_core.functions.events import deadline_instance_id
from hitl_core.functions.runtime import build_runtime, close_runtime, reset_runtime
from hitl_core.registry import WorkflowSpec
from hitl_core.settings import Settings
from hitl_core.workflow.policy import EscalationStep

from .test_deadline_orchestrator import fresh_function_app

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------- the model
def pending(*, deadline_s: float | None = None, policy: dict[str, Any] | None = None,
            approval: ApprovalPolicy | None = None, approvers: Sequence[str] = ("user:amy",)) -> PendingRequest:
    return PendingRequest(call_id="c", executor_id="x", request_executor_id="request_info", request_type="T",
                          request={}, created_at=T0, approvers=list(approvers), policy=policy or {},
                          deadline=T0 + dt.timedelta(seconds=deadline_s) if deadline_s is not None else None,
                          approval=approval.model_dump(mode="json") if approval and approval.stored else None)


def step(**values: Any) -> EscalationStep:
    return EscalationStep(**values)


def test_the_legacy_forms_read_as_chains_due_at_the_deadline() -> None:
    assert escalation_chain(pending()) == []  # no deadline, no chain
    assert escalation_chain(pending(deadline_s=90)) == [step(after_seconds=90, action="expire")]
    assert escalation_chain(pending(deadline_s=90, policy={"action": "expire"})) == \
        [step(after_seconds=90, action="expire")]
    assert escalation_chain(pending(deadline_s=90, policy={"action": "auto_respond", "default": {"ok": 1}})) == \
        [step(after_seconds=90, action="auto_respond", answer={"ok": 1})]
    escalate = {"action": "escalate", "escalate_to": ["role:Directors", "dora"], "extend_seconds": 30,
                "then": "expire"}
    assert escalation_chain(pending(deadline_s=90, policy=escalate)) == [
        step(after_seconds=90, action="escalate", to=["role:directors", "user:dora"], mode="replace"),
        step(after_seconds=30, action="expire")]
    then_answer = {**escalate, "then": "auto_respond", "default": {"ok": 0}}
    assert escalation_chain(pending(deadline_s=90, policy=then_answer))[1] == \
        step(after_seconds=30, action="auto_respond", answer={"ok": 0})
    # no extend_seconds: the service's reminder interval, as before
    assert escalation_chain(pending(deadline_s=90, policy={"action": "escalate"}),
                            extend_default_seconds=77)[1].after_seconds == 77


def test_the_legacy_deadline_is_kept_to_the_microsecond() -> None:
    request = pending(deadline_s=1.3, policy={"action": "expire"})
    chain = escalation_chain(request)
    assert chain == [step(after_seconds=2, action="expire")]
    index, base = progress(request, chain)
    assert (index, base + dt.timedelta(seconds=chain[0].after_seconds)) == (0, request.deadline)
    # a request an older version escalated: the next step is `then`, due at the (extended) deadline
    escalated = pending(deadline_s=500, policy={"action": "escalate", "extend_seconds": 30, "escalated": True})
    index, base = progress(escalated, escalation_chain(escalated))
    assert (index, base + dt.timedelta(seconds=30)) == (1, escalated.deadline)


def test_a_declared_chain_wins_over_the_timeout_policy_and_is_kept_on_the_request() -> None:
    chain = (step(after_seconds=60, action="remind"),
             step(after_seconds=120, action="escalate", managers=True),
             step(after_seconds=300, action="expire"))
    policy = ApprovalPolicy(escalation=chain)
    assert policy.stored and not policy.votes  # kept on the request, yet the first answer decides
    request = pending(deadline_s=10, policy={"action": "auto_respond", "default": {}}, approval=policy)
    assert escalation_chain(request) == list(chain)
    assert ApprovalPolicy().stored is False and ApprovalPolicy(quorum=2).escalation == ()


def test_a_request_with_a_chain_and_no_deadline_gets_the_chain_s() -> None:
    before = dt.datetime.now(dt.UTC)
    request = RequestInfoMessage(approval=ApprovalPolicy(escalation=(
        step(after_seconds=60, action="remind"), step(after_seconds=120, action="escalate", to=["role:x"]))))
    assert request.deadline is not None  # the escalation: 60 + 120 s from now
    assert before + dt.timedelta(seconds=180) <= request.deadline <= dt.datetime.now(dt.UTC) + dt.timedelta(
        seconds=180)
    only_reminders = RequestInfoMessage(approval=ApprovalPolicy(escalation=(step(after_seconds=5, action="remind"),)))
    assert only_reminders.deadline is None  # nothing takes it away: no deadline
    given = T0 + dt.timedelta(days=1)
    assert RequestInfoMessage(deadline=given, approval=ApprovalPolicy(escalation=(
        step(after_seconds=5, action="expire"),))).deadline == given


@pytest.mark.parametrize(("values", "message"), [
    ({"after_seconds": 5, "action": "escalate"}, "needs 'to'"),
    ({"after_seconds": 5, "action": "auto_respond"}, "needs 'answer'"),
    ({"after_seconds": -1, "action": "expire"}, "greater than or equal to 0"),
    ({"after_seconds": 5, "action": "nap"}, "'remind', 'escalate', 'auto_respond' or 'expire'"),
    ({"after_seconds": 5, "action": "expire", "to": ["user:x"]}, "belong to escalate steps"),
    ({"after_seconds": 5, "action": "remind", "answer": {}}, "belongs to auto_respond steps"),
    ({"after_seconds": 5, "action": "escalate", "to": ["x"], "mode": "swap"}, "'add' or 'replace'"),
    ({"after_seconds": 5, "action": "expire", "when": "later"}, "Extra inputs are not permitted"),
])
def test_a_bad_step_is_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EscalationStep.model_validate(values)
    with pytest.raises(ValidationError, match=message):  # also inside a policy (what a checkpoint holds)
        ApprovalPolicy.model_validate({"escalation": [values]})


def test_steps_are_frozen() -> None:
    frozen = step(after_seconds=1, action="expire")
    with pytest.raises(ValidationError):
        frozen.after_seconds = 2  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------- a workflow to walk
class ChainInput(BaseModel):
    steps: list[dict[str, Any]]
    approvers: list[str]
    subject: str | None = None
    quorum: int = 1


class Answer(BaseModel):
    approved: bool


@dataclass
class ChainRequest(RequestInfoMessage):
    title: str = "please decide"


class Asker(Executor):
    def __init__(self) -> None:
        super().__init__(id="asker")

    @handler
    async def ask(self, job: ChainInput, ctx: WorkflowContext[ChainRequest]) -> None:
        policy = ApprovalPolicy(quorum=job.quorum, escalation=tuple(EscalationStep(**s) for s in job.steps))
        await ctx.send_message(ChainRequest(approvers=job.approvers, subject=job.subject, approval=policy),
                               target_id="request_info")

    @handler
    async def answered(self, answer: RequestResponse[ChainRequest, Answer],
                       ctx: WorkflowContext[Any, dict[str, Any]]) -> None:
        await ctx.yield_output({"approved": answer.data.approved, "by": answer.decided_by,
                                "votes": len(answer.votes)})


def build(storage: CheckpointStorage, settings: Settings) -> Workflow:
    asker, info = Asker(), RequestInfoExecutor(id="request_info")
    return (WorkflowBuilder(name="chain-test").set_start_executor(asker).add_edge(asker, info)
            .add_edge(info, asker).with_checkpointing(checkpoint_storage=storage).build())


SPEC = WorkflowSpec(name="chain-test", input_model=ChainInput, build=build)


class Recording:
    """The service's publisher, also remembering what it published (in order, once per event id)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.events: dict[str, dict[str, Any]] = {}

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        await self.inner.publish(events)
        for event in events:
            self.events.setdefault(event["id"], event)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()

    def of(self, call_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events.values() if e["subject"].endswith(f"/requests/{call_id}")]


@dataclass
class Stack:
    host: DevHost
    durable: LocalDurableRuntime
    events: Recording


@pytest.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    for name, value in {"HITL_STORAGE": "sqlite", "HITL_DATA_DIR": str(tmp_path), "HITL_AUTH_MODE": "dev",
                        "HITL_DIRECTORY": "file", "HITL_DIRECTORY_FILE": str(ROOT / "devhost" / "demo-directory.json"),
                        "HITL_REMINDER_INTERVAL_SECONDS": "3600", "HITL_EXPENSE_MANAGER_DEADLINE_SECONDS": "1",
                        "HITL_EXPENSE_FINANCE_DEADLINE_SECONDS": "3"}.items():
        monkeypatch.setenv(name, value)
    for name in ("HITL_SMTP_HOST", "HITL_NOTIFY_WEBHOOK_URL", "HITL_NOTIFY_DEFAULT_RECIPIENTS"):
        monkeypatch.delenv(name, raising=False)
    app = fresh_function_app()
    configure([*workflows.ALL, SPEC])
    await reset_durable_sdk_session()
    host = DevHost(app, port=0, data_dir=tmp_path / "host", smtp=False, timers=False)
    await host.start()
    monkeypatch.setenv("HITL_EVENTGRID_TOPIC_ENDPOINT", host.eventgrid_topic_url())
    monkeypatch.setenv("HITL_EVENTGRID_TOPIC_KEY", host.eventgrid_key)
    reset_runtime()  # built again, publishing to the local topic
    recording = Recording(get_runtime().service.publisher)
    get_runtime().service.publisher = recording
    try:
        yield Stack(host, cast(LocalDurableRuntime, host.durable), recording)
    finally:
        await host.stop()
        await reset_durable_sdk_session()
        await close_runtime()
        configure(workflows.ALL)


async def eventually[T](probe: Callable[[], Awaitable[T]], *, within: float = 20, what: str = "") -> T:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        value = await probe()
        if value:
            return value
        assert loop.time() < end, f"timed out waiting for {what or probe}"
        await asyncio.sleep(0.05)


async def start(session_id: str, steps: list[dict[str, Any]], approvers: list[str], *,
                subject: str | None = None, quorum: int = 1) -> str:
    result = await get_runtime().service.start("chain-test", session_id=session_id, input={
        "steps": steps, "approvers": approvers, "subject": subject, "quorum": quorum})
    return result.session.pending_requests[0].call_id


async def tracked(stack: Stack, session_id: str, call_id: str) -> str:
    """The orchestration track_deadlines started for the request (once it exists)."""
    instance_id = deadline_instance_id(session_id, call_id)
    await eventually(lambda: stack.durable.get_status(instance_id), what=f"orchestration of {session_id}")
    return instance_id


async def actions(session_id: str) -> list[str]:
    return [r.action for r in (await get_runtime().service.audit(session_id, verify=True)).records]


async def may(session_id: str, call_id: str, person: str) -> bool:
    return await get_runtime().service.may_decide(session_id, call_id, Caller(user=person)) is None


# ---------------------------------------------------------------------------------------------- walks
async def test_remind_then_escalate_to_managers_then_expire(stack: Stack) -> None:
    steps = [{"after_seconds": 1, "action": "remind"},
             {"after_seconds": 1, "action": "escalate", "managers": True, "mode": "replace"},
             {"after_seconds": 3, "action": "expire"}]
    call_id = await start("walk", steps, ["amy"], subject="erin")  # erin's request: amy decides
    service = get_runtime().service
    created = (await service.get_session("walk")).pending_requests[0]
    assert created.deadline is not None and created.created_at is not None
    # the deadline shown is the escalation's (1 + 1 s), not the reminder's
    assert abs((created.deadline - created.created_at).total_seconds() - 2) < 0.5
    assert await may("walk", call_id, "amy") and not await may("walk", call_id, "mona")
    instance = await tracked(stack, "walk", call_id)

    async def escalated() -> bool:
        return "escalated" in await actions("walk")

    await eventually(escalated, what="the escalation")
    view = (await service.get_session("walk")).pending_requests[0]
    assert view.approvers == ["user:mona"]  # amy's manager, instead of amy
    assert await may("walk", call_id, "mona") and not await may("walk", call_id, "amy")
    assert view.deadline is not None and view.deadline > created.deadline  # now the expiry's

    status = await stack.durable.wait_for_completion(instance, timeout_s=20)
    assert status.output == {"outcome": "expired", "reminders": 0, "steps": ["reminded", "escalated", "expired"]}
    session = await service.get_session("walk")
    assert session.status == "failed" and session.decisions[0]["outcome"] == "expired"

    audit = (await service.audit("walk", verify=True))
    assert audit.verification is not None and audit.verification.valid
    assert [r.action for r in audit.records] == ["started", "reminded", "escalated", "expired"]
    reminded, escalation, expired = audit.records[1:]
    # each step when due: the reminder after 1 s (track_deadlines started the walk at it), the rest after it
    assert 0.9 < (reminded.at - created.created_at).total_seconds() < 1.9
    assert 0.9 < (escalation.at - reminded.at).total_seconds() < 2.5
    assert 2.9 < (expired.at - escalation.at).total_seconds() < 4.5
    assert (reminded.detail["step"], reminded.detail["of"]) == (1, 3)
    assert escalation.detail | {"deadline": None} == {
        "step": 2, "index": 1, "of": 3, "action": "escalate", "mode": "replace", "from": ["user:amy"],
        "to": ["user:mona"], "managers": ["user:mona"], "deadline": None}
    assert (expired.detail["step"], expired.actor) == (3, "system")

    events = stack.events.of(call_id)
    assert [e["type"] for e in events] == ["hitl.request.created", "hitl.request.reminder",
                                           "hitl.request.escalated", "hitl.request.expired"]
    assert events[1]["data"]["escalation"] == {"step": 1, "index": 0, "of": 3, "action": "remind"}
    chain_step = events[2]["data"]["escalation"]
    assert {k: chain_step[k] for k in ("step", "of", "action", "mode", "from", "to")} == {
        "step": 2, "of": 3, "action": "escalate", "mode": "replace", "from": ["user:amy"], "to": ["user:mona"]}
    # the deadline amy missed: the one she was shown (each step counts from when the previous one was applied)
    missed = dt.datetime.fromisoformat(chain_step["missed_deadline"])
    assert abs((missed - created.deadline).total_seconds()) < 0.5
    assert events[2]["data"]["escalated_from"] == ["user:amy"] and events[2]["data"]["approvers"] == ["user:mona"]


async def test_a_step_is_applied_once_when_two_processes_apply_it_together(stack: Stack) -> None:
    steps = [{"after_seconds": 3600, "action": "escalate", "to": ["role:finance"], "mode": "add"},
             {"after_seconds": 3600, "action": "expire"}]
    call_id = await start("once", steps, ["amy"], subject="erin")
    await tracked(stack, "once", call_id)  # waiting an hour for step 0
    first = get_runtime().service
    other = build_runtime()  # a second process: its own service and storage connection, same database
    try:
        outcomes = await asyncio.gather(first.escalations.apply("once", call_id, 0),
                                        other.service.escalations.apply("once", call_id, 0),
                                        first.escalations.apply("once", call_id, 0))
    finally:
        await other.service.close()
    assert sorted(o.outcome for o in outcomes) == ["escalated", "skipped", "skipped"]
    applied = next(o for o in outcomes if o.outcome == "escalated")
    assert all(o.next == applied.next for o in outcomes)  # the losers answer the current plan: step 1
    assert applied.next is not None and applied.next.index == 1 and applied.next.action == "expire"
    assert await actions("once") == ["started", "escalated"]
    view = (await first.get_session("once")).pending_requests[0]
    assert view.approvers == ["user:amy", "role:finance"]  # mode=add: amy keeps it, finance joins
    assert await may("once", call_id, "amy") and await may("once", call_id, "fay")
    # again, later (a retried activity): still nothing
    assert (await first.escalations.apply("once", call_id, 0)).outcome == "skipped"
    escalations = [e for e in stack.events.of(call_id) if e["type"] == "hitl.request.escalated"]
    assert len(escalations) == 1


async def test_the_activity_applies_a_step_once_through_the_app(stack: Stack) -> None:
    steps = [{"after_seconds": 3600, "action": "remind"}, {"after_seconds": 3600, "action": "expire"}]
    call_id = await start("activity", steps, ["amy"], subject="erin")
    activity = next(f.user_function for f in stack.host.functions if f.name == "apply_escalation_step")
    payload = {"session_id": "activity", "call_id": call_id, "index": 0}
    results = await asyncio.gather(activity(payload), activity(payload))
    assert sorted(r["outcome"] for r in results) == ["reminded", "skipped"]
    assert results[0]["next"] == results[1]["next"] and results[0]["next"]["index"] == 1
    assert await actions("activity") == ["started", "reminded"]


async def test_periodic_reminders_before_the_next_step_and_a_second_orchestration_changes_nothing(
        stack: Stack) -> None:
    call_id = await start("twice", [{"after_seconds": 3, "action": "expire"}], ["amy"], subject="erin")
    plan = await get_runtime().service.escalations.plan("twice", call_id)
    assert plan is not None and (plan.index, plan.action, plan.of) == (0, "expire", 1)
    tracked_by_trigger = await tracked(stack, "twice", call_id)
    payload = deadline_input("twice", call_id, plan.at.isoformat(), get_runtime().settings, step=0,
                             at=plan.at.isoformat())
    payload["reminder_interval_seconds"] = 1
    second = await stack.durable.start_new(ORCHESTRATOR_NAME, "second-walk", payload)
    outputs = [(await stack.durable.wait_for_completion(i, timeout_s=20)).output
               for i in (tracked_by_trigger, second)]
    assert outputs[1]["reminders"] >= 1  # type: ignore[index]
    assert sorted(o["outcome"] for o in outputs) == ["decided", "expired"]  # type: ignore[index]
    assert await actions("twice") == ["started", "expired"]
    types = [e["type"] for e in stack.events.of(call_id)]
    assert types.count("hitl.request.expired") == 1 and "hitl.request.reminder" in types


async def test_auto_respond_answers_with_the_declared_answer(stack: Stack) -> None:
    steps = [{"after_seconds": 1, "action": "auto_respond", "answer": {"approved": False}}]
    call_id = await start("auto", steps, ["amy"], subject="erin")
    status = await stack.durable.wait_for_completion(await tracked(stack, "auto", call_id), timeout_s=20)
    assert status.output == {"outcome": "auto_responded", "reminders": 0, "steps": ["auto_responded"]}
    session = await get_runtime().service.get_session("auto")
    assert session.status == "completed"
    assert session.outputs == [{"approved": False, "by": "system:auto_respond", "votes": 0}]
    records = (await get_runtime().service.audit("auto")).records
    assert [(r.action, r.actor) for r in records][-1] == ("decided", "system:auto_respond")


async def test_a_refused_auto_answer_is_audited_and_the_walk_goes_on(stack: Stack) -> None:
    steps = [{"after_seconds": 3600, "action": "auto_respond", "answer": {"verdict": "yes"}},
             {"after_seconds": 3600, "action": "expire"}]
    call_id = await start("bad-answer", steps, ["amy"])
    outcome = await get_runtime().service.escalations.apply("bad-answer", call_id, 0)
    assert outcome.outcome == "auto_respond_failed" and outcome.next is not None and outcome.next.index == 1
    records = (await get_runtime().service.audit("bad-answer")).records
    assert records[-1].action == "auto_respond_failed" and "verdict" in records[-1].detail["reason"]
    assert (await get_runtime().service.escalations.apply("bad-answer", call_id, 1)).outcome == "expired"


async def test_no_manager_at_the_top_is_audited_and_the_walk_goes_on(stack: Stack) -> None:
    steps = [{"after_seconds": 3600, "action": "escalate", "managers": True},
             {"after_seconds": 60, "action": "expire"}]
    call_id = await start("top", steps, ["mona"], subject="amy")
    service = get_runtime().service
    outcome = await service.escalations.apply("top", call_id, 0)
    assert outcome.outcome == "escalation_skipped"
    assert outcome.next is not None and outcome.next.index == 1 and outcome.deadline == outcome.next.at
    record = (await service.audit("top")).records[-1]
    assert record.action == "escalation_skipped" and "no manager" in record.detail["reason"]
    view = (await service.get_session("top")).pending_requests[0]
    assert view.approvers == ["user:mona"] and view.deadline == outcome.next.at
    assert [e["type"] for e in stack.events.of(call_id)] == ["hitl.request.created"]  # nobody new to tell


async def test_a_chain_with_quorum_one_decides_on_the_first_answer_and_ends_the_orchestration(stack: Stack) -> None:
    steps = [{"after_seconds": 3600, "action": "escalate", "managers": True}]
    call_id = await start("first", steps, ["amy"], subject="erin")
    instance = await tracked(stack, "first", call_id)
    view = await get_runtime().service.respond("first", call_id, {"approved": True}, caller=Caller(user="amy"))
    assert view.status == "completed" and view.outputs == [{"approved": True, "by": "amy", "votes": 0}]
    assert "votes" not in view.decisions[0]  # an answer, not a vote
    status = await stack.durable.wait_for_completion(instance, timeout_s=20)
    assert status.output == {"outcome": "decided", "reminders": 0}


async def test_a_vote_that_resolves_the_request_ends_the_orchestration(stack: Stack) -> None:
    steps = [{"after_seconds": 3600, "action": "expire"}]
    call_id = await start("votes", steps, ["fay", "fred"], subject="erin", quorum=2)
    instance = await tracked(stack, "votes", call_id)
    service = get_runtime().service
    await service.respond("votes", call_id, {"approved": True}, caller=Caller(user="fay"))
    assert (await stack.durable.get_status(instance)).runtime_status == "Running"  # type: ignore[union-attr]
    view = await service.respond("votes", call_id, {"approved": True}, caller=Caller(user="fred"))
    assert view.status == "completed" and view.outputs[0]["votes"] == 2
    status = await stack.durable.wait_for_completion(instance, timeout_s=20)
    assert status.output == {"outcome": "decided", "reminders": 0}


async def test_the_expense_manager_step_escalates_to_the_manager_s_manager(stack: Stack) -> None:
    service = get_runtime().service
    started = await service.start("expense-approval", session_id="expense", caller=Caller(user="ed"), input={
        "employee": "erin", "amount": 80, "currency": "EUR", "description": "taxi"})
    request = started.session.pending_requests[0]
    assert request.approvers == ["user:amy"] and request.deadline is not None  # erin's manager, 1 s
    call_id = request.call_id
    instance = await tracked(stack, "expense", call_id)

    async def escalated() -> bool:
        pending = (await service.get_session("expense")).pending_requests
        return bool(pending) and pending[0].approvers == ["user:mona"]

    await eventually(escalated, what="the escalation to mona")
    assert not await may("expense", call_id, "amy") and await may("expense", call_id, "mona")
    (event,) = [e for e in stack.events.of(call_id) if e["type"] == "hitl.request.escalated"]
    assert {k: event["data"]["escalation"][k] for k in ("step", "of", "mode", "to")} == {
        "step": 1, "of": 2, "mode": "replace", "to": ["user:mona"]}
    view = await service.respond("expense", call_id, {"approved": True, "comment": "ok"}, caller=Caller(user="mona"))
    assert view.outputs == [{"status": "approved", "amount": 80.0, "decided_by": ["mona"]}]
    status = await stack.durable.wait_for_completion(instance, timeout_s=20)
    assert status.output == {"outcome": "decided", "reminders": 0, "steps": ["escalated"]}
    assert await actions("expense") == ["started", "escalated", "decided"]
