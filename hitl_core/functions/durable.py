"""Durable deadlines: one orchestration per request with a deadline (or an escalation chain).

The orchestrator walks the request's escalation chain (:mod:`hitl_core.escalation`) one step at a
time: it waits for the ``decided`` event or the timer of the next step, reminding the approvers
every ``HITL_REMINDER_INTERVAL_SECONDS`` meanwhile; when the step is due the ``apply_escalation_step``
activity applies it (at most once: a retried or raced activity for a step already applied changes
nothing) and answers which step is next and when. The first step comes with the input
(``track_deadlines`` reads it; without one, step 0 at the request's deadline).

Orchestrator code must be deterministic: it reads time only from ``context.current_utc_datetime``
and stored state only through activities, whose results Durable records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from typing import Any, TypedDict

import azure.durable_functions as df

from ..escalation import FINAL_OUTCOMES
from ..settings import Settings
from .runtime import get_runtime

bp = df.Blueprint()

ORCHESTRATOR_NAME = "request_deadline"
DECIDED_EVENT = "decided"


def deadline_input(session_id: str, call_id: str, deadline: str, settings: Settings, *,
                   step: int | None = None, at: str | None = None) -> dict[str, Any]:
    """The orchestration's input: the request, its deadline and (when known) its next step and when it is due."""
    data: dict[str, Any] = {
        "session_id": session_id,
        "call_id": call_id,
        "deadline": deadline,
        "reminder_interval_seconds": settings.reminder_interval_seconds,
        "reminders_sent": 0,
    }
    if step is not None:
        data["step"] = step
        data["at"] = at or deadline
    return data


def _utc(value: str | dt.datetime) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


@bp.orchestration_trigger(context_name="context", orchestration=ORCHESTRATOR_NAME)
def request_deadline(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    data = context.get_input() or {}
    session_id, call_id = data["session_id"], data["call_id"]
    index = int(data.get("step", 0))
    due = _utc(data.get("at") or data["deadline"])
    interval = dt.timedelta(seconds=max(1, int(data.get("reminder_interval_seconds", 86400))))
    reminders = int(data.get("reminders_sent", 0))
    applied: list[str] = []

    def result(outcome: str) -> dict[str, Any]:
        return {"outcome": outcome, "reminders": reminders, **({"steps": applied} if applied else {})}

    decided = context.wait_for_external_event(DECIDED_EVENT)
    while True:
        now = _utc(context.current_utc_datetime)
        next_reminder = now + interval
        reminding = next_reminder < due
        timer = context.create_timer(next_reminder if reminding else due)
        winner = yield context.task_any([decided, timer])
        if winner == decided:
            if not timer.is_completed:
                timer.cancel()
            return result("decided")
        if reminding:
            reminders += 1
            still_pending = yield context.call_activity(
                "send_reminder", {"session_id": session_id, "call_id": call_id, "number": reminders}
            )
            if not still_pending:
                return result("decided")
            continue
        outcome = yield context.call_activity(
            "apply_escalation_step", {"session_id": session_id, "call_id": call_id, "index": index}
        )
        status = str(outcome.get("outcome"))
        if status != "skipped":
            applied.append(status)
        following = outcome.get("next")
        if status in FINAL_OUTCOMES or not following:  # decided, or the chain is walked to its end
            return result(status if status in FINAL_OUTCOMES else "finished")
        index, due = int(following["index"]), _utc(following["at"])


# Activity inputs are TypedDict classes, not ``dict[str, Any]``: the Python worker refuses a builtin
# generic as a binding annotation (the app would load with no functions in Azure).
class ReminderInput(TypedDict):
    """What ``request_deadline`` passes to ``send_reminder``."""

    session_id: str
    call_id: str
    number: int


class TimeoutInput(TypedDict):
    """What ``apply_timeout`` takes (the request; it applies whichever step is next)."""

    session_id: str
    call_id: str


class StepInput(TypedDict):
    """What ``request_deadline`` passes to ``apply_escalation_step``: the step it found due."""

    session_id: str
    call_id: str
    index: int


@bp.activity_trigger(input_name="payload")
async def send_reminder(payload: ReminderInput) -> bool:
    return await get_runtime().service.escalations.remind(payload["session_id"], payload["call_id"],
                                                          int(payload["number"]))


@bp.activity_trigger(input_name="payload")
async def apply_escalation_step(payload: StepInput) -> dict[str, Any]:
    """Apply step ``index`` of the request's chain if it is the next one; answers what happened and what is next."""
    service = get_runtime().service
    outcome = await service.escalations.apply(payload["session_id"], payload["call_id"], int(payload["index"]))
    return outcome.as_json()


@bp.activity_trigger(input_name="payload")
async def apply_timeout(payload: TimeoutInput) -> dict[str, Any]:
    """Apply the request's next step now, whichever it is (kept for orchestrations and callers of before the chains)."""
    service = get_runtime().service
    outcome = await service.escalations.apply(payload["session_id"], payload["call_id"])
    return outcome.as_json()
