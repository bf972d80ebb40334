"""The local Event Grid topic: the real publisher client in, the app's trigger function out."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.messaging import CloudEvent
from azure.eventgrid.aio import EventGridPublisherClient

from devhost.eventgrid import RetryPolicy
from devhost.server import DevHost
from tests.devhost import sample_app

FAST = RetryPolicy(max_attempts=5, initial_delay=0.05, multiplier=2.0)


def _host(data: Path, retry: RetryPolicy = FAST) -> DevHost:
    return DevHost(sample_app.app, port=0, data_dir=data, timers=False, smtp=False, eventgrid_retry=retry)


@pytest.fixture
def record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    monkeypatch.setenv("SAMPLE_RECORD_DIR", str(folder))
    return folder


@pytest.fixture
async def host(tmp_path: Path, record_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DevHost]:
    devhost = _host(tmp_path / "data")
    await devhost.start()
    monkeypatch.setenv("HITL_EVENTGRID_TOPIC_ENDPOINT", devhost.eventgrid_topic_url())
    monkeypatch.setenv("HITL_EVENTGRID_TOPIC_KEY", devhost.eventgrid_key)
    try:
        yield devhost
    finally:
        await devhost.stop()


def _events(record_dir: Path) -> list[dict[str, Any]]:
    path = record_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _stats(host: DevHost) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(host.base_url + "/api/_dev/eventgrid")
        assert resp.status_code == 200
        return dict(resp.json())


async def test_an_event_published_by_the_app_reaches_the_trigger(host: DevHost, record_dir: Path) -> None:
    async with httpx.AsyncClient(base_url=host.api_url, timeout=10) as http:
        resp = await http.post("/publish", json={"type": "hitl.request.created", "subject": "sessions/s1",
                                                  "data": {"session_id": "s1", "n": 1}})
    assert resp.status_code == 200, resp.text
    event_id = resp.json()["id"]
    await _until(lambda: len(_events(record_dir)) == 1)
    (got,) = _events(record_dir)
    assert got.pop("time").startswith("20")  # the publisher stamped it
    assert got == {"id": event_id, "type": "hitl.request.created", "subject": "sessions/s1",
                   "data": {"session_id": "s1", "n": 1}, "source": "/sample", "class": "CloudEvent", "attempt": 1}
    stats = await _stats(host)
    assert stats["subscribers"] == ["on_event"]
    assert (stats["delivered"], stats["failed"], stats["pending"]) == (1, 0, 0)


async def test_a_wrong_key_is_401_and_nothing_is_delivered(host: DevHost, record_dir: Path) -> None:
    client = EventGridPublisherClient(host.eventgrid_topic_url(), AzureKeyCredential("not-the-key"))
    async with client:
        with pytest.raises(ClientAuthenticationError):
            await client.send([CloudEvent(source="/t", type="x", data={})])
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(host.eventgrid_topic_url(), content=b"[]",
                               headers={"content-type": "application/cloudevents-batch+json"})
    assert resp.status_code == 401
    await asyncio.sleep(0.2)
    assert _events(record_dir) == []
    stats = await _stats(host)
    assert (stats["delivered"], stats["pending"], stats["events"], stats["rejected_publishes"]) == (0, 0, 0, 2)


async def test_invalid_events_are_rejected_with_the_reason(host: DevHost) -> None:
    headers = {"aeg-sas-key": host.eventgrid_key, "content-type": "application/cloudevents-batch+json; charset=utf-8"}
    async with httpx.AsyncClient(timeout=10) as http:
        bad = [{"id": "1", "source": "/s", "type": "t", "specversion": "0.3"}]
        resp = await http.post(host.eventgrid_topic_url(), json=bad, headers=headers)
        assert resp.status_code == 400
        assert "specversion" in resp.json()["error"]["message"]
        both = [{"id": "1", "source": "/s", "type": "t", "specversion": "1.0", "data": 1, "data_base64": "AA=="}]
        assert (await http.post(host.eventgrid_topic_url(), json=both, headers=headers)).status_code == 400
        assert (await http.post(host.eventgrid_topic_url(), content=b"{nope", headers=headers)).status_code == 400
        resp = await http.post(host.eventgrid_topic_url(), json=[],
                               headers={**headers, "content-type": "application/json"})
        assert resp.status_code == 415
        big = [{"id": "1", "source": "/s", "type": "t", "specversion": "1.0", "data": "x" * (1024 * 1024)}]
        assert (await http.post(host.eventgrid_topic_url(), json=big, headers=headers)).status_code == 413
    assert (await _stats(host))["events"] == 0


async def test_failed_deliveries_are_retried_with_backoff_until_success(host: DevHost, record_dir: Path) -> None:
    client = EventGridPublisherClient(host.eventgrid_topic_url(), AzureKeyCredential(host.eventgrid_key))
    event = CloudEvent(source="/t", type="retry.me", subject="s", data={"fail_times": 2})
    async with client:
        await client.send(event)
    await _until(lambda: len(_events(record_dir)) == 1)
    await asyncio.sleep(0.3)  # no further deliveries after the success
    (got,) = _events(record_dir)
    assert (got["id"], got["attempt"]) == (event.id, 3)
    stats = await _stats(host)
    assert stats["functions"]["on_event"] == {"delivered": 1, "failed": 0, "pending": 0, "attempts": 3}


async def test_a_delivery_that_keeps_failing_is_dropped_after_max_attempts(host: DevHost, record_dir: Path) -> None:
    client = EventGridPublisherClient(host.eventgrid_topic_url(), AzureKeyCredential(host.eventgrid_key))
    event = CloudEvent(source="/t", type="always.fails", data={"fail_times": 99})
    async with client:
        await client.send(event)

    async def failed() -> int:
        return int((await _stats(host))["failed"])

    deadline = asyncio.get_running_loop().time() + 10
    while await failed() != 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert (record_dir / f"attempts-{event.id}").read_text() == "5"
    assert _events(record_dir) == []
    stats = await _stats(host)
    assert stats["recent_failures"][0]["event_id"] == event.id
    assert "failing attempt 5" in stats["recent_failures"][0]["error"]


async def test_undelivered_events_survive_a_restart(tmp_path: Path, record_dir: Path) -> None:
    data = tmp_path / "data"
    first = _host(data, RetryPolicy(max_attempts=5, initial_delay=60))  # the retry would come much later
    await first.start()
    client = EventGridPublisherClient(first.eventgrid_topic_url(), AzureKeyCredential(first.eventgrid_key))
    event = CloudEvent(source="/t", type="survives", data={"fail_times": 1})
    async with client:
        await client.send(event)
    await _until(lambda: (record_dir / f"attempts-{event.id}").exists())
    await asyncio.sleep(0.1)
    assert (await _stats(first))["pending"] == 1
    await first.stop()
    assert _events(record_dir) == []

    second = _host(data)
    await second.start()
    try:
        assert second.eventgrid_key == first.eventgrid_key  # the key lives in the data dir
        await _until(lambda: len(_events(record_dir)) == 1)
        assert _events(record_dir)[0]["id"] == event.id
        assert _events(record_dir)[0]["attempt"] == 2
        stats = await _stats(second)
        assert (stats["delivered"], stats["pending"]) == (1, 0)
    finally:
        await second.stop()


async def test_a_subscription_filter_keeps_other_event_types_from_the_function(
        tmp_path: Path, record_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in Azure, where each subscription names its includedEventTypes: an app that declares them
    (``app.eventgrid_subscriptions``) gets each function only the types it subscribed to."""
    monkeypatch.setattr(sample_app.app, "eventgrid_subscriptions", {"on_event": ["hitl.request.created"]},
                        raising=False)
    devhost = _host(tmp_path / "data")
    await devhost.start()
    monkeypatch.setenv("HITL_EVENTGRID_TOPIC_ENDPOINT", devhost.eventgrid_topic_url())
    monkeypatch.setenv("HITL_EVENTGRID_TOPIC_KEY", devhost.eventgrid_key)
    try:
        async with httpx.AsyncClient(base_url=devhost.api_url, timeout=10) as http:
            for kind in ("hitl.request.resolved", "hitl.request.created"):
                resp = await http.post("/publish", json={"type": kind, "subject": "sessions/s1", "data": {}})
                assert resp.status_code == 200, resp.text
        await _until(lambda: len(_events(record_dir)) == 1)
        await asyncio.sleep(0.2)
        assert [e["type"] for e in _events(record_dir)] == ["hitl.request.created"]
        stats = await _stats(devhost)
        assert (stats["delivered"], stats["pending"]) == (1, 0)
    finally:
        await devhost.stop()


@pytest.mark.parametrize("path", ["batch", "sdk-send"])
async def test_the_service_publisher_posts_its_outbox_json_as_one_batch(
        host: DevHost, record_dir: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """hitl's publisher sends the outbox's CloudEvents JSON through the SDK's pipeline without the SDK's
    generic serializer (the largest cost of a publish); the trigger receives the same event either way,
    its time included. A wrong key is a publish error, and nothing is delivered."""
    import azure.eventgrid._legacy._helpers as helpers

    from hitl_core.events.eventgrid import EventGridEventPublisher, EventPublishError
    from hitl_core.events.models import make_event

    if path == "batch":
        def not_used(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the SDK's generic serializer was used")
        monkeypatch.setattr(helpers, "_build_request", not_used)
    else:  # an SDK of another shape: its public send
        monkeypatch.setattr(EventGridEventPublisher, "_sender", lambda self: None)
    moment = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    event = make_event("hitl.request.created", workflow="wf", session_id="s1", call_id="c1",
                       data={"amount": 12.5, "who": ["amy"], "nested": {"ok": True}}, time=moment)
    publisher = EventGridEventPublisher(host.eventgrid_topic_url(), key=host.eventgrid_key)
    try:
        await publisher.publish([event])
    finally:
        await publisher.close()
    await _until(lambda: len(_events(record_dir)) == 1)
    (seen,) = _events(record_dir)
    assert seen["id"] == event["id"] and seen["type"] == "hitl.request.created"
    assert seen["subject"] == "sessions/s1/requests/c1" and seen["data"] == event["data"]
    assert "2026-11-30" in seen["time"] and "09:00:00" in seen["time"], seen["time"]  # the fact's time, kept

    wrong = EventGridEventPublisher(host.eventgrid_topic_url(), key="not-the-key")
    try:
        with pytest.raises(EventPublishError, match="HTTP 401"):
            await wrong.publish([event])
    finally:
        await wrong.close()
