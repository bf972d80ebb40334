"""Durable deadlines: one orchestration per request with a deadline.

The orchestrator waits for the decision event or a timer. Before the deadline it sends a
reminder at every interval; at the deadline it applies the request's timeout policy
(``expire``, ``auto_respond`` with a declared default, or ``escalate`` to new approvers with a
new deadline, after which it keeps waiting). A decision raises the ``decided`` event that ends it.
Orchestrator code must be deterministic: it reads time only from ``context.current_utc_datetime``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from typing import Any, TypedDict

import azure.durable_functions as df

from ..settings import Settings
from .runtime import get_runtime

bp = df.Blueprint()

ORCHESTRATOR_NAME = "request_deadline"
DECIDED_EVENT = "decided"


def deadline_input(session_id: str, call_id: str, deadline: str, settings: Settings) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "call_id": call_id,
        "deadline": deadline,
        "reminder_interval_seconds": settings.reminder_interval_seconds,
        "reminders_sent": 0,
    }


def _utc(value: str | dt.datetime) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


@bp.orchestration_trigger(context_name="context", orchestration=ORCHESTRATOR_NAME)
def request_deadline(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    data = context.get_input() or {}
    session_id, call_id = data["session_id"], data["call_id"]
    deadline = _utc(data["deadline"])
    interval = dt.timedelta(seconds=max(1, int(data.get("reminder_interval_seconds", 86400))))
    reminders = int(data.get("reminders_sent", 0))
    decided = context.wait_for_external_event(DECIDED_EVENT)
    while True:
        now = _utc(context.current_utc_datetime)
        next_reminder = now + interval
        reminding = next_reminder < deadline
        fire_at = next_reminder if reminding else deadline
        timer = context.create_timer(fire_at)
        winner = yield context.task_any([decided, timer])
        if winner == decided:
            if not timer.is_completed:
                timer.cancel()
            return {"outcome": "decided", "reminders": reminders}
        if reminding:
            reminders += 1
            still_pending = yield context.call_activity(
                "send_reminder", {"session_id": session_id, "call_id": call_id, "number": reminders}
            )
            if not still_pending:
                return {"outcome": "decided", "reminders": reminders}
            continue
        outcome = yield context.call_activity("apply_timeout", {"session_id": session_id, "call_id": call_id})
        if outcome.get("outcome") == "escalated" and outcome.get("deadline"):
            deadline = _utc(outcome["deadline"])
            continue
        return {"outcome": outcome.get("outcome", "expired"), "reminders": reminders}


# Activity inputs are TypedDict classes, not ``dict[str, Any]``: the Python worker refuses a builtin
# generic as a binding annotation (the app would load with no functions in Azure).
class ReminderInput(TypedDict):
    """What ``request_deadline`` passes to ``send_reminder``."""

    session_id: str
    call_id: str
    number: int


class TimeoutInput(TypedDict):
    """What ``request_deadline`` passes to ``apply_timeout``."""

    session_id: str
    call_id: str


@bp.activity_trigger(input_name="payload")
async def send_reminder(payload: ReminderInput) -> bool:
    return await get_runtime().service.remind(payload["session_id"], payload["call_id"], int(payload["number"]))


@bp.activity_trigger(input_name="payload")
async def apply_timeout(payload: TimeoutInput) -> dict[str, Any]:
    outcome = await get_runtime().service.apply_timeout(payload["session_id"], payload["call_id"])
    return {"outcome": outcome.outcome, "deadline": outcome.deadline.isoformat() if outcome.deadline else None}
