"""A tiny Durable Functions app (Python v2 model) that the local durable runtime tests drive.

Why its own app: the runtime must run *real* orchestrator code written against the SDK, so the
tests need orchestrators that exercise activities (sync and async), a human-approval wait with
reminders and a deadline (task_any over an external event and timers), retries, a
sub-orchestration, continue-as-new, a failing orchestrator, and an HTTP starter with a durable
client binding. Every function records what it saw in ``CALLS`` so tests can assert timing.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

Orchestration = Generator[Any, Any, Any]

CALLS: list[tuple[str, Any, float]] = []
"""(activity, input, time.monotonic()) for every activity invocation, in call order."""

FLAKY_FAILURES: dict[str, int] = {}
"""How many more times ``flaky`` fails for a given key (tests set it)."""


def calls(name: str) -> list[tuple[str, Any, float]]:
    """The recorded invocations of one activity."""
    return [c for c in CALLS if c[0] == name]


@app.activity_trigger(input_name="name")
async def say_hello(name: str) -> str:
    CALLS.append(("say_hello", name, time.monotonic()))
    return f"Hello, {name}!"


@app.activity_trigger(input_name="payload")
def send_reminder(payload: dict[str, Any]) -> dict[str, Any]:
    """A sync activity: the runtime runs it in a worker thread, as the Python worker does."""
    CALLS.append(("send_reminder", payload, time.monotonic()))
    return {"sent": payload["n"]}


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    CALLS.append(("flaky", key, time.monotonic()))
    remaining = FLAKY_FAILURES.get(key, 0)
    if remaining > 0:
        FLAKY_FAILURES[key] = remaining - 1
        raise RuntimeError(f"flaky {key} failed")
    return f"ok:{key}"


@app.orchestration_trigger(context_name="context")
def hello_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """Call one activity and return its result."""
    name = context.get_input()
    greeting = yield context.call_activity("say_hello", name)
    return greeting


@app.orchestration_trigger(context_name="context")
def approval_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """Wait for "decided" until a deadline, sending a reminder at every interval meanwhile.

    Reminders are due at start + k * interval (k = 1, 2, ...) while before the deadline; the
    deadline timer is created once and raced against the event and the next reminder.
    """
    config = context.get_input()
    started = context.current_utc_datetime
    interval = timedelta(seconds=config["reminder_seconds"])
    deadline_at = started + timedelta(seconds=config["deadline_seconds"])
    deadline = context.create_timer(deadline_at)
    sent = 0
    while True:
        decided = context.wait_for_external_event("decided")
        due = started + interval * (sent + 1)
        reminder = context.create_timer(due) if due < deadline_at else None
        waiting = [decided, deadline] if reminder is None else [decided, reminder, deadline]
        context.set_custom_status({"reminders": sent})
        winner = yield context.task_any(waiting)
        if winner == decided:
            deadline.cancel()
            if reminder is not None:
                reminder.cancel()
            return f"decided:{decided.result}"
        if winner == deadline:
            if reminder is not None:
                reminder.cancel()
            return "expired"
        sent += 1
        yield context.call_activity("send_reminder", {"n": sent})


@app.orchestration_trigger(context_name="context")
def retry_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """Call ``flaky`` with retries, then a plain activity (checks the sequence numbering)."""
    key = context.get_input()
    try:
        result = yield context.call_activity_with_retry("flaky", df.RetryOptions(100, 3), key)
    except Exception as exc:
        result = f"gave up: {str(exc).splitlines()[0]}"
    after = yield context.call_activity("say_hello", "after-retry")
    return [result, after]


@app.orchestration_trigger(context_name="context")
def fan_out_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """task_all over activities plus a sub-orchestration."""
    names = context.get_input()
    tasks = [context.call_activity("say_hello", n) for n in names]
    tasks.append(context.call_sub_orchestrator("hello_orchestrator", "child"))
    results = yield context.task_all(tasks)
    return results


@app.orchestration_trigger(context_name="context")
def counter_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """Continue-as-new until the counter reaches 3."""
    count = context.get_input() or 0
    yield context.call_activity("say_hello", f"round-{count}")
    if count < 3:
        context.continue_as_new(count + 1)
        return None
    return count


@app.orchestration_trigger(context_name="context")
def late_wait_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """Only waits for "go" after an activity: an earlier "go" must be buffered, not lost."""
    yield context.call_activity("say_hello", "first")
    go = yield context.wait_for_external_event("go")
    return {"go": go}


@app.orchestration_trigger(context_name="context")
def http_call_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """Uses a durable HTTP call, which the local runtime does not implement."""
    response = yield context.call_http("GET", "http://127.0.0.1:9/")
    return response


@app.orchestration_trigger(context_name="context")
def failing_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    yield context.call_activity("say_hello", "doomed")
    raise ValueError("orchestrator exploded")


@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The classic HTTP starter: start the named orchestrator, answer the check-status links."""
    function_name = req.route_params["functionName"]
    payload = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(function_name, req.params.get("instance_id"), payload)
    return client.create_check_status_response(req, instance_id)


FUNCTIONS = app.get_functions()
"""``get_functions()`` may run once per app object: every runtime in the tests shares this list."""
