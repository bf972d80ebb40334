"""WebhookChannel against a real aiohttp receiver on loopback: signature, retries, give-up rules."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from hitl_core.errors import HitlError
from hitl_core.notify import (
    CloudEvent,
    NotificationDeliveryError,
    WebhookChannel,
    redact_url,
    render_notification,
    sign,
    verify_signature,
)
from tests.support.redis_server import free_port

from .conftest import BASE, WEBHOOK_SECRET, WebhookReceiver, make_event


def _event_and_note() -> tuple[CloudEvent, object]:
    event = CloudEvent.coerce(make_event())
    return event, render_notification(event, now=BASE)


def _channel(url: str, **options: object) -> WebhookChannel:
    defaults: dict[str, object] = {"backoff_base": 0.05, "max_attempts": 5, "timeout": 2.0}
    defaults.update(options)
    return WebhookChannel(url, WEBHOOK_SECRET, **defaults)  # type: ignore[arg-type]


async def test_delivers_signed_json_with_headers(webhook_receiver: WebhookReceiver) -> None:
    event, note = _event_and_note()
    channel = _channel(webhook_receiver.url)
    await channel.send(event, note)  # type: ignore[arg-type]
    await channel.aclose()

    [request] = webhook_receiver.requests
    assert request.verified
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-HITL-Event-Id"] == "evt-1"
    assert request.headers["X-HITL-Event-Type"] == "hitl.request.created"
    assert abs(int(request.headers["X-HITL-Timestamp"]) - time.time()) < 5
    assert request.headers["X-HITL-Signature"].startswith("sha256=")
    body = json.loads(request.body)
    assert body["event"]["id"] == "evt-1" and body["event"]["data"]["call_id"] == "call-1"
    assert body["event"]["source"] == "/workflows/content-review"
    assert body["notification"]["subject"].startswith("[hitl] Approval needed: content-review")
    assert "Publish the Q1 launch post" in body["notification"]["text"]
    assert body["notification"]["recipients"] == ["alice@example.com"]


def test_verify_signature_rejects_tampering_wrong_key_and_stale_timestamps() -> None:
    body = b'{"event":{"id":"e"}}'
    now = 1_700_000_000
    header = sign(WEBHOOK_SECRET, now, body)
    assert verify_signature(WEBHOOK_SECRET, now, body, header, now=now)
    assert verify_signature(WEBHOOK_SECRET, str(now), body.decode(), header, now=now + 299)
    assert not verify_signature(WEBHOOK_SECRET, now, body.replace(b'"e"', b'"f"'), header, now=now)
    assert not verify_signature("other-secret", now, body, header, now=now)
    assert not verify_signature(WEBHOOK_SECRET, now + 1, body, header, now=now)  # timestamp is signed
    assert not verify_signature(WEBHOOK_SECRET, now, body, header, now=now + 301)  # replay window
    assert not verify_signature(WEBHOOK_SECRET, now, body, None, now=now)
    assert not verify_signature(WEBHOOK_SECRET, "soon", body, header, now=now)
    assert not verify_signature(WEBHOOK_SECRET, now, body, "sha256=00", now=now)
    rotated = f"{sign('old-secret', now, body)}, {header}"
    assert verify_signature(WEBHOOK_SECRET, now, body, rotated, now=now)


async def test_receiver_rejects_a_tampered_body(webhook_receiver: WebhookReceiver) -> None:
    import httpx

    event, note = _event_and_note()
    body = WebhookChannel.payload(event, note)  # type: ignore[arg-type]
    stamp = int(time.time())
    headers = {"X-HITL-Timestamp": str(stamp), "X-HITL-Signature": sign(WEBHOOK_SECRET, stamp, body),
               "content-type": "application/json"}
    async with httpx.AsyncClient() as client:
        tampered = body.replace(b"Publish the Q1", b"Delete the Q1")
        bad = await client.post(webhook_receiver.url, content=tampered, headers=headers)
        good = await client.post(webhook_receiver.url, content=body, headers=headers)
    assert (bad.status_code, good.status_code) == (401, 200)
    assert [r.verified for r in webhook_receiver.requests] == [False, True]


async def test_retries_503_with_growing_backoff(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.respond(503, times=3)
    event, note = _event_and_note()
    channel = _channel(webhook_receiver.url, backoff_base=0.1)
    await channel.send(event, note)  # type: ignore[arg-type]
    await channel.aclose()
    requests = webhook_receiver.requests
    assert len(requests) == 4 and all(r.verified for r in requests)
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    # equal jitter: each wait is at least half of 0.1, 0.2, 0.4 and at most the full step
    for gap, step in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert step / 2 - 0.01 <= gap <= step + 0.25
    # every retry is signed afresh and carries the same event id
    assert {r.headers["X-HITL-Event-Id"] for r in requests} == {"evt-1"}


async def test_429_honours_retry_after_up_to_the_cap(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.respond(429, headers={"Retry-After": "1"})
    event, note = _event_and_note()
    channel = _channel(webhook_receiver.url, backoff_base=0.01)
    await channel.send(event, note)  # type: ignore[arg-type]
    first, second = webhook_receiver.requests
    assert 0.95 <= second.at - first.at < 2.0

    webhook_receiver.requests.clear()
    webhook_receiver.respond(429, headers={"Retry-After": "3600"})
    capped = _channel(webhook_receiver.url, backoff_base=0.01, max_retry_after=0.3)
    await capped.send(event, note)  # type: ignore[arg-type]
    first, second = webhook_receiver.requests
    assert 0.25 <= second.at - first.at < 1.0
    await channel.aclose()
    await capped.aclose()


async def test_400_fails_at_once_without_leaking_the_query(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.default_status = 400
    event, note = _event_and_note()
    url = webhook_receiver.url + "?code=super-secret-function-key"
    channel = _channel(url)
    with pytest.raises(NotificationDeliveryError) as caught:
        await channel.send(event, note)  # type: ignore[arg-type]
    await channel.aclose()
    assert len(webhook_receiver.requests) == 1
    assert webhook_receiver.requests[0].path_qs.endswith("?code=super-secret-function-key")  # it was used...
    error = caught.value
    assert isinstance(error, HitlError)
    assert "super-secret" not in str(error) and "super-secret" not in error.target  # ...but never shown
    assert error.target == webhook_receiver.url
    assert error.last_status == 400 and error.attempts == 1
    assert "last status: 400" in str(error) and "not retried" in str(error)


async def test_gives_up_after_max_attempts_naming_url_and_status(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.default_status = 503
    event, note = _event_and_note()
    channel = _channel(webhook_receiver.url, max_attempts=3, backoff_base=0.02)
    with pytest.raises(NotificationDeliveryError) as caught:
        await channel.send(event, note)  # type: ignore[arg-type]
    await channel.aclose()
    assert len(webhook_receiver.requests) == 3
    assert caught.value.attempts == 3 and caught.value.last_status == 503
    assert f"webhook {webhook_receiver.url} failed after 3 attempt(s); last status: 503" in str(caught.value)


async def test_408_and_timeouts_are_retried(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.respond(408)
    webhook_receiver.respond(200, delay=1.0)  # slower than the client's timeout
    event, note = _event_and_note()
    channel = _channel(webhook_receiver.url, timeout=0.3, backoff_base=0.02)
    await channel.send(event, note)  # type: ignore[arg-type]
    await channel.aclose()
    assert len(webhook_receiver.requests) == 3


async def test_connection_refused_is_retried_then_reported() -> None:
    url = f"http://user:pw@127.0.0.1:{free_port()}/hook?sig=xyz"
    event, note = _event_and_note()
    channel = _channel(url, max_attempts=3, backoff_base=0.01)
    started = time.monotonic()
    with pytest.raises(NotificationDeliveryError) as caught:
        await channel.send(event, note)  # type: ignore[arg-type]
    await channel.aclose()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert caught.value.attempts == 3 and caught.value.last_status is None
    assert "ConnectError" in message and "last status: none" in message
    assert "pw" not in caught.value.target and "xyz" not in message and "user:" not in message


async def test_max_elapsed_bounds_the_whole_send(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.default_status = 500
    event, note = _event_and_note()
    channel = _channel(webhook_receiver.url, max_attempts=50, backoff_base=0.2, max_elapsed=0.5)
    started = time.monotonic()
    with pytest.raises(NotificationDeliveryError):
        await channel.send(event, note)  # type: ignore[arg-type]
    await channel.aclose()
    assert time.monotonic() - started < 1.0
    assert 2 <= len(webhook_receiver.requests) < 6


async def test_shared_client_is_not_closed(webhook_receiver: WebhookReceiver) -> None:
    import httpx

    event, note = _event_and_note()
    async with httpx.AsyncClient() as client:
        channel = WebhookChannel(webhook_receiver.url, WEBHOOK_SECRET, client=client)
        await channel.send(event, note)  # type: ignore[arg-type]
        await channel.aclose()
        assert not client.is_closed
    assert len(webhook_receiver.requests) == 1


def test_configuration_errors_and_redaction() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookChannel("ftp://example.com/x?key=s", "k")
    with pytest.raises(ValueError):
        WebhookChannel("https://example.com/", "k", max_attempts=0)
    assert redact_url("https://u:p@h.example:8443/a/b?code=1#f") == "https://h.example:8443/a/b"
    assert "s3" not in repr(WebhookChannel("https://h/x?code=s3", "secret-value"))
    assert "secret-value" not in repr(WebhookChannel("https://h/x", "secret-value"))
