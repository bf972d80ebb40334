"""The deadline orchestrator, replayed by the real azure-functions-durable SDK (local Durable runtime).

Paths of the older ``deadline`` + ``timeout_policy`` form (read as a one- or two-step escalation
chain; chains as data: test_escalation_chain.py): decided before the deadline, reminders then
expiry, auto-respond, escalate then expire.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import workflows
from devhost.durable import LocalDurableRuntime, reset_durable_sdk_session
from hitl_core import (
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
from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import configure, get_runtime
from hitl_core.functions.durable import ORCHESTRATOR_NAME
from hitl_core.functions.runtime import close_runtime
from hitl_core.registry import WorkflowSpec
from hitl_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class DeadlineInput(BaseModel):
    deadline_seconds: float
    policy: dict[str, Any]
    approvers: list[str] = []


class Answer(BaseModel):
    approved: bool


@dataclass
class TimedRequest(RequestInfoMessage):
    subject: str = "please decide"


class Asker(Executor):
    def __init__(self) -> None:
        super().__init__(id="asker")

    @handler
    async def ask(self, job: DeadlineInput, ctx: WorkflowContext[TimedRequest]) -> None:
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=job.deadline_seconds)
        await ctx.send_message(TimedRequest(deadline=deadline, timeout_policy=job.policy, approvers=job.approvers),
                               target_id="request_info")

    @handler
    async def answered(self, answer: RequestResponse[TimedRequest, Answer],
                       ctx: WorkflowContext[Any, dict[str, Any]]) -> None:
        await ctx.yield_output({"approved": answer.data.approved, "by": answer.decided_by})


def build(storage: CheckpointStorage, settings: Settings) -> Workflow:
    asker, info = Asker(), RequestInfoExecutor(id="request_info")
    return (WorkflowBuilder(name="deadline-test").set_start_executor(asker).add_edge(asker, info)
            .add_edge(info, asker).with_checkpointing(checkpoint_storage=storage).build())


SPEC = WorkflowSpec(name="deadline-test", input_model=DeadlineInput, build=build)


def fresh_function_app() -> Any:
    """A new app object (get_functions() may be called once per app object)."""
    spec = importlib.util.spec_from_file_location("function_app_for_durable_tests", ROOT / "function_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


@pytest.fixture
async def durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalDurableRuntime]:
    monkeypatch.setenv("HITL_STORAGE", "sqlite")
    monkeypatch.setenv("HITL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HITL_AUTH_MODE", "dev")
    monkeypatch.delenv("HITL_EVENTGRID_TOPIC_ENDPOINT", raising=False)
    app = fresh_function_app()
    configure([*workflows.ALL, SPEC])
    get_runtime().service.publisher = InMemoryEventPublisher()
    await reset_durable_sdk_session()
    runtime = LocalDurableRuntime(app.get_functions(), store_path=tmp_path / "durable.db")
    await runtime.start()
    yield runtime
    await runtime.stop()
    await reset_durable_sdk_session()
    await close_runtime()
    configure(workflows.ALL)


async def start_session(session_id: str, deadline_seconds: float, policy: dict[str, Any]) -> str:
    result = await get_runtime().service.start("deadline-test", session_id=session_id,
                                               input={"deadline_seconds": deadline_seconds, "policy": policy})
    request = result.session.pending_requests[0]
    assert request.deadline is not None
    return request.call_id


async def orchestrate(runtime: LocalDurableRuntime, session_id: str, call_id: str, interval: float) -> str:
    view = await get_runtime().service.get_session(session_id)
    deadline = view.pending_requests[0].deadline
    assert deadline is not None
    return await runtime.start_new(ORCHESTRATOR_NAME, f"deadline-{session_id}", {
        "session_id": session_id, "call_id": call_id, "deadline": deadline.isoformat(),
        "reminder_interval_seconds": interval, "reminders_sent": 0})


def event_types() -> list[str]:
    publisher = get_runtime().service.publisher
    assert isinstance(publisher, InMemoryEventPublisher)
    return [e["type"] for e in publisher.events]


async def test_decision_before_the_deadline_ends_the_orchestration(durable: LocalDurableRuntime) -> None:
    call_id = await start_session("d-approve", 5, {"action": "expire"})
    instance = await orchestrate(durable, "d-approve", call_id, interval=60)
    await get_runtime().service.respond("d-approve", call_id, {"approved": True})
    await durable.raise_event(instance, "decided", {"event": "hitl.request.resolved"})
    status = await durable.wait_for_completion(instance, timeout_s=10)
    assert status.runtime_status == "Completed"
    assert status.output == {"outcome": "decided", "reminders": 0}
    assert (await get_runtime().service.get_session("d-approve")).status == "completed"


async def test_reminders_then_expiry(durable: LocalDurableRuntime) -> None:
    call_id = await start_session("d-expire", 1.3, {"action": "expire"})
    instance = await orchestrate(durable, "d-expire", call_id, interval=1)
    status = await durable.wait_for_completion(instance, timeout_s=15)
    assert status.output["outcome"] == "expired"  # type: ignore[index]
    assert status.output["reminders"] >= 1  # type: ignore[index]
    view = await get_runtime().service.get_session("d-expire")
    assert view.status == "failed" and view.decisions[0]["outcome"] == "expired"
    assert "hitl.request.reminder" in event_types() and "hitl.request.expired" in event_types()


async def test_auto_respond_resumes_with_the_declared_default(durable: LocalDurableRuntime) -> None:
    call_id = await start_session("d-auto", 1, {"action": "auto_respond", "default": {"approved": False}})
    instance = await orchestrate(durable, "d-auto", call_id, interval=60)
    status = await durable.wait_for_completion(instance, timeout_s=15)
    assert status.output["outcome"] == "auto_responded"  # type: ignore[index]
    view = await get_runtime().service.get_session("d-auto")
    assert view.status == "completed"
    assert view.outputs == [{"approved": False, "by": "system:auto_respond"}]
    audit = await get_runtime().service.audit("d-auto", verify=True)
    assert [(r.action, r.actor) for r in audit.records][-1] == ("decided", "system:auto_respond")


async def test_escalation_moves_the_request_then_it_expires(durable: LocalDurableRuntime) -> None:
    call_id = await start_session("d-esc", 1, {"action": "escalate", "escalate_to": ["role:directors"],
                                                 "extend_seconds": 1, "then": "expire"})
    instance = await orchestrate(durable, "d-esc", call_id, interval=60)
    status = await durable.wait_for_completion(instance, timeout_s=20)
    assert status.output["outcome"] == "expired"  # type: ignore[index]
    audit = await get_runtime().service.audit("d-esc", verify=True)
    assert [r.action for r in audit.records] == ["started", "escalated", "expired"]
    assert audit.records[1].detail["to"] == ["role:directors"]
    assert "hitl.request.escalated" in event_types()
    # read as a two-step chain: the escalation at the deadline, then `then` after extend_seconds
    assert status.output["steps"] == ["escalated", "expired"]  # type: ignore[index]
    publisher = get_runtime().service.publisher
    assert isinstance(publisher, InMemoryEventPublisher)
    (escalated,) = [e for e in publisher.events if e["type"] == "hitl.request.escalated"]
    assert {k: escalated["data"]["escalation"][k] for k in ("step", "of", "action", "mode", "to")} == {
        "step": 1, "of": 2, "action": "escalate", "mode": "replace", "to": ["role:directors"]}
    assert escalated["data"]["escalated_from"] == []
