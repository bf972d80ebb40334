"""The local durable runtime drives the real azure-functions-durable SDK end to end.

No mocks: orchestrators are the sample app's real generator functions behind the SDK's handle,
the client is the SDK's ``DurableOrchestrationClient`` talking HTTP to the runtime's webhooks
served by a real aiohttp server on 127.0.0.1, and timers are wall-clock timers (short ones).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import azure.durable_functions as df
import azure.functions as func
import pytest
from aiohttp import web

from devhost.durable import (
    DURABLE_WEBHOOK_PREFIX,
    InstanceAlreadyExistsError,
    InstanceCompletedError,
    InstanceNotFoundError,
    LocalDurableRuntime,
    OrchestratorNotFoundError,
    reset_durable_sdk_session,
)
from devhost.durable_history import utc_now

from . import durable_sample_app as sample

pytestmark = pytest.mark.timeout(30)


class Host:
    """A real aiohttp server on 127.0.0.1 that mounts the runtime's webhooks, like the devhost."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.runtime: LocalDurableRuntime | None = None
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self, *, clock: Callable[[], datetime] | None = None) -> LocalDurableRuntime:
        runtime = LocalDurableRuntime(sample.FUNCTIONS, store_path=self.store_path, clock=clock)
        app = web.Application()
        app.add_subapp(DURABLE_WEBHOOK_PREFIX, runtime.webhook_app())
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        runtime.base_url = self.base_url = f"http://127.0.0.1:{port}"
        await runtime.start()
        self.runtime, self.runner = runtime, runner
        return runtime

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        self.runtime = self.runner = None

    def client(self) -> df.DurableOrchestrationClient:
        assert self.runtime is not None
        return df.DurableOrchestrationClient(self.runtime.client_binding_json())


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    sample.CALLS.clear()
    sample.FLAKY_FAILURES.clear()
    await reset_durable_sdk_session()
    h = Host(tmp_path / "durable.db")
    try:
        yield h
    finally:
        await h.stop()
        await reset_durable_sdk_session()


async def eventually(check: Callable[[], Awaitable[bool]], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_discovery_finds_durable_functions(host: Host) -> None:
    runtime = await host.start()
    assert "hello_orchestrator" in runtime.orchestrator_names
    assert {"say_hello", "send_reminder", "flaky"} <= set(runtime.activity_names)
    assert runtime.client_function_names == ["http_start"]
    starter = json.loads(runtime.binding_kwargs("http_start")["client"])
    assert starter["rpcBaseUrl"] == f"{host.base_url}{DURABLE_WEBHOOK_PREFIX}/"
    assert starter["managementUrls"]["id"] == "INSTANCEID"


async def test_activity_result_is_returned_and_status_completed(host: Host) -> None:
    runtime = await host.start()
    client = host.client()
    instance_id = await client.start_new("hello_orchestrator", None, "Ada")
    await runtime.wait_for_completion(instance_id, timeout_s=5)

    status = await client.get_status(instance_id)
    assert status.runtime_status == df.OrchestrationRuntimeStatus.Completed
    assert status.output == "Hello, Ada!"
    assert status.input_ == "Ada"
    assert status.name == "hello_orchestrator"
    assert sample.calls("say_hello")[0][1] == "Ada"

    with_history = await runtime.get_status(instance_id, show_history=True)
    assert with_history is not None and with_history.history is not None
    kinds = [e["EventType"] for e in with_history.history]
    assert kinds[:2] == [12, 0]  # OrchestratorStarted, ExecutionStarted
    assert 4 in kinds and 5 in kinds  # TaskScheduled, TaskCompleted


async def test_http_starter_with_durable_client_binding(host: Host) -> None:
    runtime = await host.start()
    starter_fn = next(f for f in sample.FUNCTIONS if f.get_function_name() == "http_start")
    request = func.HttpRequest(
        method="POST",
        url=f"{host.base_url}/api/orchestrators/hello_orchestrator",
        headers={"Content-Type": "application/json"},
        params={"instance_id": "http-1"},
        route_params={"functionName": "hello_orchestrator"},
        body=json.dumps("Grace").encode(),
    )
    response = await starter_fn.get_user_function()(req=request, **runtime.binding_kwargs(starter_fn))
    assert response.status_code == 202
    links = json.loads(response.get_body())
    assert links["id"] == "http-1"
    assert links["statusQueryGetUri"].startswith(f"{host.base_url}{DURABLE_WEBHOOK_PREFIX}/instances/http-1")

    async with aiohttp.ClientSession() as session:

        async def completed() -> bool:
            async with session.get(links["statusQueryGetUri"]) as resp:
                return resp.status == 200

        await eventually(completed)
        async with session.get(links["statusQueryGetUri"]) as resp:
            body = await resp.json()
    assert body["runtimeStatus"] == "Completed"
    assert body["output"] == "Hello, Grace!"
    assert body["input"] == "Grace"


async def test_external_event_before_deadline_ends_the_wait(host: Host) -> None:
    runtime = await host.start()
    client = host.client()
    instance_id = await client.start_new(
        "approval_orchestrator", "appr-1", {"reminder_seconds": 5, "deadline_seconds": 10}
    )

    async def waiting() -> bool:
        return len(runtime.pending_timers(instance_id)) == 2  # the reminder and the deadline

    await eventually(waiting)
    status = await client.get_status(instance_id)
    assert status.runtime_status == df.OrchestrationRuntimeStatus.Running
    assert status.custom_status == {"reminders": 0}

    started = time.monotonic()
    await client.raise_event(instance_id, "decided", "approved")
    final = await runtime.wait_for_completion(instance_id, timeout_s=5)
    assert time.monotonic() - started < 2
    assert final.runtime_status == "Completed"
    assert final.output == "decided:approved"
    assert runtime.pending_timers(instance_id) == []
    assert runtime.armed_timer_count(instance_id) == 0
    assert sample.calls("send_reminder") == []


async def test_reminders_fire_at_the_interval_then_the_deadline_expires(host: Host) -> None:
    runtime = await host.start()
    started = time.monotonic()
    instance_id = await runtime.start_new(
        "approval_orchestrator", "appr-2", {"reminder_seconds": 0.4, "deadline_seconds": 1.4}
    )
    final = await runtime.wait_for_completion(instance_id, timeout_s=6)
    elapsed = time.monotonic() - started

    assert final.runtime_status == "Completed"
    assert final.output == "expired"
    reminders = sample.calls("send_reminder")
    assert [c[1] for c in reminders] == [{"n": 1}, {"n": 2}, {"n": 3}]
    for k, (_, _, at) in enumerate(reminders, start=1):
        offset = at - started
        assert 0.4 * k - 0.05 <= offset <= 0.4 * k + 0.35, (k, offset)
    assert 1.35 <= elapsed <= 3.0
    assert runtime.pending_timers(instance_id) == []


async def test_restart_continues_a_waiting_instance_and_its_timer_fires(host: Host) -> None:
    runtime = await host.start()
    timed = await runtime.start_new(
        "approval_orchestrator", "restart-timer", {"reminder_seconds": 60, "deadline_seconds": 1.0}
    )
    waiting = await runtime.start_new(
        "approval_orchestrator", "restart-event", {"reminder_seconds": 60, "deadline_seconds": 120}
    )

    async def armed() -> bool:
        return len(runtime.pending_timers(timed)) == 1 and len(runtime.pending_timers(waiting)) == 2  # no reminder fits

    await eventually(armed)
    await host.stop()  # the "process" goes away; only the SQLite file remains
    await reset_durable_sdk_session()

    runtime = await host.start()  # a new runtime over the same store
    client = host.client()
    assert (await client.get_status(timed)).runtime_status == df.OrchestrationRuntimeStatus.Running
    final = await runtime.wait_for_completion(timed, timeout_s=5)
    assert final.output == "expired"

    await client.raise_event(waiting, "decided", {"by": "alice"})
    final = await runtime.wait_for_completion(waiting, timeout_s=5)
    assert final.output == "decided:{'by': 'alice'}"


async def test_overdue_timers_fire_at_once_after_restart(host: Host) -> None:
    runtime = await host.start()
    instance_id = await runtime.start_new(
        "approval_orchestrator", "overdue", {"reminder_seconds": 3600, "deadline_seconds": 7200}
    )

    async def armed() -> bool:
        return len(runtime.pending_timers(instance_id)) == 2

    await eventually(armed)
    await host.stop()

    # The process was down for three hours: the reminder and the deadline are both overdue.
    runtime = await host.start(clock=lambda: utc_now() + timedelta(hours=3))
    started = time.monotonic()
    final = await runtime.wait_for_completion(instance_id, timeout_s=5)
    assert time.monotonic() - started < 2
    assert final.output == "expired"
    assert [c[1] for c in sample.calls("send_reminder")] == [{"n": 1}]


async def test_raise_event_to_unknown_or_finished_instance_is_an_error(host: Host) -> None:
    runtime = await host.start()
    client = host.client()
    with pytest.raises(Exception, match="No instance with ID nobody found"):
        await client.raise_event("nobody", "decided", "x")
    with pytest.raises(InstanceNotFoundError):
        await runtime.raise_event("nobody", "decided", "x")

    instance_id = await client.start_new("hello_orchestrator", "done-1", "Linus")
    await runtime.wait_for_completion(instance_id, timeout_s=5)
    with pytest.raises(Exception, match="is gone"):
        await client.raise_event(instance_id, "decided", "x")
    with pytest.raises(InstanceCompletedError):
        await runtime.raise_event(instance_id, "decided", "x")


async def test_event_raised_before_the_wait_is_buffered(host: Host) -> None:
    runtime = await host.start()
    instance_id = await runtime.start_new(
        "approval_orchestrator", "early", {"reminder_seconds": 60, "deadline_seconds": 120}
    )
    await runtime.raise_event(instance_id, "decided", "early-bird")  # may land before the first episode
    final = await runtime.wait_for_completion(instance_id, timeout_s=5)
    assert final.output == "decided:early-bird"


async def test_event_raised_while_the_orchestrator_is_busy_is_kept_for_the_later_wait(host: Host) -> None:
    runtime = await host.start()
    # Neither call yields to the loop, so "go" is queued behind ExecutionStarted, i.e. it is
    # recorded while say_hello is still scheduled and nobody waits for "go" yet.
    instance_id = await runtime.start_new("late_wait_orchestrator", "late", None)
    await runtime.raise_event(instance_id, "go", [1, 2])
    final = await runtime.wait_for_completion(instance_id, timeout_s=5)
    assert final.output == {"go": [1, 2]}
    history = (await runtime.get_status(instance_id, show_history=True)).history  # type: ignore[union-attr]
    assert history is not None
    kinds = [e["EventType"] for e in history]
    assert kinds.index(15) < kinds.index(5)  # EventRaised was recorded before TaskCompleted


async def test_start_with_a_running_id_conflicts_and_a_finished_one_is_replaced(host: Host) -> None:
    runtime = await host.start()
    client = host.client()
    await client.start_new("approval_orchestrator", "dup", {"reminder_seconds": 60, "deadline_seconds": 120})
    with pytest.raises(Exception, match="already exists"):
        await client.start_new("approval_orchestrator", "dup", {"reminder_seconds": 60, "deadline_seconds": 120})
    with pytest.raises(InstanceAlreadyExistsError):
        await runtime.start_new("hello_orchestrator", "dup", "x")

    await client.terminate("dup", "test over")
    terminated = await client.get_status("dup")
    assert terminated.runtime_status == df.OrchestrationRuntimeStatus.Terminated
    assert terminated.output == "test over"

    assert await client.start_new("hello_orchestrator", "dup", "again") == "dup"
    final = await runtime.wait_for_completion("dup", timeout_s=5)
    assert final.output == "Hello, again!"

    with pytest.raises(Exception, match="doesn't exist"):
        await client.start_new("no_such_orchestrator", None, None)
    with pytest.raises(OrchestratorNotFoundError):
        await runtime.start_new("no_such_orchestrator")


async def test_terminate_and_purge_through_the_sdk_client(host: Host) -> None:
    runtime = await host.start()
    client = host.client()
    instance_id = await client.start_new(
        "approval_orchestrator", "term-1", {"reminder_seconds": 60, "deadline_seconds": 120}
    )

    async def armed() -> bool:
        return len(runtime.pending_timers(instance_id)) == 2

    await eventually(armed)
    assert (await client.purge_instance_history(instance_id)).instances_deleted == 0  # still running
    await client.terminate(instance_id, "no longer needed")
    assert runtime.pending_timers(instance_id) == []
    with pytest.raises(Exception, match="is gone"):
        await client.raise_event(instance_id, "decided", "late")

    listed = await client.get_status_by(runtime_status=[df.OrchestrationRuntimeStatus.Terminated])
    assert [s.instance_id for s in listed] == [instance_id]

    assert (await client.purge_instance_history(instance_id)).instances_deleted == 1
    assert not await client.get_status(instance_id)
    assert (await client.purge_instance_history(instance_id)).instances_deleted == 0


async def test_retry_follows_the_durable_numbering(host: Host) -> None:
    runtime = await host.start()
    sample.FLAKY_FAILURES.update({"twice": 2, "always": 99})
    ok = await runtime.start_new("retry_orchestrator", "retry-ok", "twice")
    bad = await runtime.start_new("retry_orchestrator", "retry-bad", "always")
    final_ok = await runtime.wait_for_completion(ok, timeout_s=5)
    final_bad = await runtime.wait_for_completion(bad, timeout_s=5)

    assert final_ok.output == ["ok:twice", "Hello, after-retry!"]
    attempts = [c[2] for c in sample.calls("flaky") if c[1] == "twice"]
    assert len(attempts) == 3
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(attempts))

    assert final_bad.runtime_status == "Completed"
    assert final_bad.output[0].startswith("gave up: Activity function 'flaky' failed: RuntimeError: flaky always")
    assert final_bad.output[1] == "Hello, after-retry!"
    assert len([c for c in sample.calls("flaky") if c[1] == "always"]) == 3


async def test_task_all_with_a_sub_orchestration(host: Host) -> None:
    runtime = await host.start()
    instance_id = await runtime.start_new("fan_out_orchestrator", "fan", ["a", "b"])
    final = await runtime.wait_for_completion(instance_id, timeout_s=5)
    assert final.output == ["Hello, a!", "Hello, b!", "Hello, child!"]
    child = await runtime.get_status("fan:0002")
    assert child is not None and child.runtime_status == "Completed"


async def test_continue_as_new_restarts_with_the_new_input(host: Host) -> None:
    runtime = await host.start()
    instance_id = await runtime.start_new("counter_orchestrator", "counter", 0)
    final = await runtime.wait_for_completion(instance_id, timeout_s=5)
    assert final.output == 3
    assert final.input == 3
    assert [c[1] for c in sample.calls("say_hello")] == ["round-0", "round-1", "round-2", "round-3"]


async def test_failing_orchestrator_is_reported_failed(host: Host) -> None:
    runtime = await host.start()
    client = host.client()
    instance_id = await client.start_new("failing_orchestrator", "boom", None)
    await runtime.wait_for_completion(instance_id, timeout_s=5)
    status = await client.get_status(instance_id)
    assert status.runtime_status == df.OrchestrationRuntimeStatus.Failed
    assert "orchestrator exploded" in status.output


async def test_unsupported_actions_fail_the_orchestration_clearly(host: Host) -> None:
    runtime = await host.start()
    instance_id = await runtime.start_new("http_call_orchestrator", "http-call")
    final = await runtime.wait_for_completion(instance_id, timeout_s=5)
    assert final.runtime_status == "Failed"
    assert "does not support CALL_HTTP" in final.output


async def test_store_is_plain_sqlite_with_history_and_timers(host: Host) -> None:
    runtime = await host.start()
    instance_id = await runtime.start_new(
        "approval_orchestrator", "inspect", {"reminder_seconds": 60, "deadline_seconds": 120}
    )

    async def armed() -> bool:
        return len(runtime.pending_timers(instance_id)) == 2

    await eventually(armed)
    with sqlite3.connect(host.store_path) as conn:
        status, history = conn.execute(
            "SELECT runtime_status, history FROM instances WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        timers = conn.execute("SELECT COUNT(*) FROM timers WHERE instance_id = ?", (instance_id,)).fetchone()[0]
    events: list[dict[str, Any]] = json.loads(history)
    assert status == "Running"
    assert timers == 2
    started = next(e for e in events if e["EventType"] == 0)
    assert started["Name"] == "approval_orchestrator" and "Version" in started
    assert [e["EventId"] for e in events if e["EventType"] == 10] == [0, 1]  # TimerCreated, numbered
