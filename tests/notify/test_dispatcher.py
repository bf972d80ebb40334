"""NotificationDispatcher end to end with a real webhook receiver and a real SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hitl_core.errors import HitlError
from hitl_core.notify import (
    CloudEvent,
    EmailChannel,
    InMemoryDedupStore,
    InvalidEventError,
    Notification,
    NotificationDispatcher,
    NotificationDispatchError,
    NotificationInFlightError,
    RedisDedupStore,
    SqliteDedupStore,
    WebhookChannel,
)
from hitl_core.settings import Settings
from tests.support.redis_server import RedisServer

from .conftest import BASE, WEBHOOK_SECRET, SmtpServer, WebhookReceiver, make_event

SETTINGS = Settings(public_base_url="https://func.example.net")


def _channels(receiver: WebhookReceiver, smtp: SmtpServer, **webhook: Any) -> list[Any]:
    options: dict[str, Any] = {"backoff_base": 0.02, "max_attempts": 2}
    options.update(webhook)
    return [
        WebhookChannel(receiver.url, WEBHOOK_SECRET, **options),
        EmailChannel("127.0.0.1", smtp.port, starttls=False, sender="hitl@example.net"),
    ]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def dedup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    store: Any
    if request.param == "memory":
        store = InMemoryDedupStore()
    elif request.param == "sqlite":
        store = SqliteDedupStore(tmp_path / "dedup.db")
    else:
        server: RedisServer = request.getfixturevalue("notify_redis")
        store = RedisDedupStore(server.url, prefix=f"test:{request.node.name}:")
    yield store
    await store.close()


async def test_delivers_to_every_channel_then_dedups(
    webhook_receiver: WebhookReceiver, smtp_server: SmtpServer, dedup: Any
) -> None:
    dispatcher = NotificationDispatcher(_channels(webhook_receiver, smtp_server), dedup, settings=SETTINGS)
    result = await dispatcher.handle(make_event(), now=BASE)
    assert result.status == "delivered"
    assert sorted(result.channels) == ["email", "webhook"] and result.already_delivered == []
    assert len(webhook_receiver.requests) == 1 and webhook_receiver.requests[0].verified
    assert len(smtp_server.received()) == 1

    again = await dispatcher.handle(make_event(), now=BASE)  # Event Grid delivered it twice
    assert again.status == "duplicate"
    assert sorted(again.already_delivered) == ["email", "webhook"]
    assert len(webhook_receiver.requests) == 1 and len(smtp_server.received()) == 1

    reminder = await dispatcher.handle(
        make_event(event_id="evt-1-reminder-1", event_type="hitl.request.reminder", reminder_number=1), now=BASE
    )
    assert reminder.status == "delivered"
    assert len(webhook_receiver.requests) == 2
    assert smtp_server.received()[-1]["Subject"].startswith("[hitl] Reminder 1: ")
    await dispatcher.aclose()


async def test_failed_webhook_is_retried_alone_on_redelivery(
    webhook_receiver: WebhookReceiver, smtp_server: SmtpServer, dedup: Any
) -> None:
    webhook_receiver.default_status = 503
    dispatcher = NotificationDispatcher(_channels(webhook_receiver, smtp_server), dedup, settings=SETTINGS)
    with pytest.raises(NotificationDispatchError) as caught:
        await dispatcher.handle(make_event(), now=BASE)
    error = caught.value
    assert isinstance(error, HitlError)
    assert set(error.failures) == {"webhook"} and error.delivered == ["email"]
    assert "last status: 503" in str(error)
    assert len(webhook_receiver.requests) == 2  # its own retries (max_attempts=2)
    assert len(smtp_server.received()) == 1

    webhook_receiver.default_status = 200  # the receiver recovers; Event Grid redelivers
    result = await dispatcher.handle(make_event(), now=BASE)
    assert result.status == "delivered"
    assert result.channels == ["webhook"] and result.already_delivered == ["email"]
    assert len(webhook_receiver.requests) == 3
    assert len(smtp_server.received()) == 1  # nobody gets the e-mail twice

    assert (await dispatcher.handle(make_event(), now=BASE)).status == "duplicate"
    assert len(webhook_receiver.requests) == 3
    await dispatcher.aclose()


async def test_redelivery_after_a_restart_with_sqlite(
    webhook_receiver: WebhookReceiver, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    webhook_receiver.default_status = 400
    path = tmp_path / "dedup.db"
    first = NotificationDispatcher(_channels(webhook_receiver, smtp_server), SqliteDedupStore(path),
                                   settings=SETTINGS)
    with pytest.raises(NotificationDispatchError):
        await first.handle(make_event(), now=BASE)
    assert len(webhook_receiver.requests) == 1  # 400: not retried by the channel
    await first.dedup.close()  # type: ignore[attr-defined]
    await first.aclose()

    webhook_receiver.default_status = 200
    restarted = NotificationDispatcher(_channels(webhook_receiver, smtp_server), SqliteDedupStore(path),
                                       settings=SETTINGS)
    result = await restarted.handle(make_event(), now=BASE)
    assert result.channels == ["webhook"] and result.already_delivered == ["email"]
    assert len(smtp_server.received()) == 1 and len(webhook_receiver.requests) == 2
    await restarted.dedup.close()  # type: ignore[attr-defined]
    await restarted.aclose()


async def test_ignores_other_event_types(webhook_receiver: WebhookReceiver, smtp_server: SmtpServer) -> None:
    dispatcher = NotificationDispatcher(_channels(webhook_receiver, smtp_server), InMemoryDedupStore(),
                                        settings=SETTINGS)
    for kind in ("hitl.request.resolved", "hitl.request.expired", "hitl.session.completed"):
        result = await dispatcher.handle({"id": f"e-{kind}", "type": kind, "source": "/workflows/x",
                                          "data": {"session_id": "s"}})
        assert result.status == "ignored" and kind in (result.reason or "")
    assert webhook_receiver.requests == [] and smtp_server.received() == []
    await dispatcher.aclose()


async def test_malformed_request_event_claims_nothing(
    webhook_receiver: WebhookReceiver, smtp_server: SmtpServer
) -> None:
    dedup = InMemoryDedupStore()
    dispatcher = NotificationDispatcher(_channels(webhook_receiver, smtp_server), dedup, settings=SETTINGS)
    with pytest.raises(InvalidEventError):
        await dispatcher.handle({"id": "bad", "type": "hitl.request.created", "data": {"call_id": "c"}})
    assert await dedup.claim("webhook:bad", 1) and await dedup.claim("email:bad", 1)
    await dispatcher.aclose()


async def test_no_recipients_skips_email_without_failing(
    webhook_receiver: WebhookReceiver, smtp_server: SmtpServer
) -> None:
    dispatcher = NotificationDispatcher(_channels(webhook_receiver, smtp_server), InMemoryDedupStore(),
                                        settings=SETTINGS)
    result = await dispatcher.handle(make_event(approvers=["editors"]), now=BASE)
    assert result.status == "delivered" and result.channels == ["webhook"]
    assert "email" in result.skipped
    assert smtp_server.received() == [] and len(webhook_receiver.requests) == 1
    await dispatcher.aclose()


async def test_cancelled_send_releases_the_claim() -> None:
    """A host timeout cancels handle() mid-send: the claim must not block the redelivery."""
    started = asyncio.Event()

    class Hanging:
        name = "slow"

        async def send(self, event: CloudEvent, notification: Notification) -> None:
            started.set()
            await asyncio.Event().wait()

    dedup = InMemoryDedupStore()
    dispatcher = NotificationDispatcher([Hanging()], dedup, settings=SETTINGS)
    task = asyncio.create_task(dispatcher.handle(make_event()))
    await started.wait()
    assert not await dedup.claim("slow:evt-1", 1)  # in flight: a concurrent copy is a duplicate
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await dedup.claim("slow:evt-1", 1)  # free again: a redelivery will send


def test_from_settings_builds_configured_channels(
    webhook_receiver: WebhookReceiver, smtp_factory: Callable[..., SmtpServer]
) -> None:
    none = NotificationDispatcher.from_settings(Settings(), InMemoryDedupStore())
    assert none.channels == []
    both = NotificationDispatcher.from_settings(
        Settings(webhook_url="https://hooks.example.com/x", webhook_secret="s", smtp_host="mail.example.com",
                 smtp_port=2525, smtp_username="u", smtp_password="p", smtp_starttls=True,
                 smtp_from="hitl@example.com"),
        InMemoryDedupStore(),
        lease_seconds=30,
    )
    webhook, mail = both.channels
    assert isinstance(webhook, WebhookChannel) and webhook.target == "https://hooks.example.com/x"
    assert isinstance(mail, EmailChannel) and (mail.host, mail.port, mail.starttls) == ("mail.example.com", 2525, True)
    assert both.lease_seconds == 30
    with pytest.raises(ValueError, match="unique"):
        NotificationDispatcher([webhook, webhook], InMemoryDedupStore(), settings=SETTINGS)


async def test_from_settings_end_to_end(webhook_receiver: WebhookReceiver, smtp_server: SmtpServer) -> None:
    settings = Settings(webhook_url=webhook_receiver.url, webhook_secret=WEBHOOK_SECRET, smtp_host="127.0.0.1",
                        smtp_port=smtp_server.port, smtp_starttls=False, smtp_from="hitl@example.net",
                        public_base_url="https://func.example.net")
    dispatcher = NotificationDispatcher.from_settings(settings, InMemoryDedupStore())
    result = await dispatcher.handle(make_event(decide_url=None), now=BASE)
    assert sorted(result.channels) == ["email", "webhook"]
    assert webhook_receiver.requests[0].verified
    [message] = smtp_server.received()
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "https://func.example.net/api/sessions/sess-42/responses" in text
    await dispatcher.aclose()


async def test_a_claim_left_by_a_dead_sender_is_retried_not_dropped(
    webhook_receiver: WebhookReceiver, smtp_server: SmtpServer, dedup: Any
) -> None:
    """A process that claimed a channel and died must not turn the redelivery into a duplicate."""
    dispatcher = NotificationDispatcher(_channels(webhook_receiver, smtp_server), dedup, settings=SETTINGS,
                                        lease_seconds=1)
    event = make_event(event_id="evt-dead-sender")
    assert await dedup.claim("email:evt-dead-sender", 1)  # the dead process's claim
    with pytest.raises(NotificationInFlightError, match="email"):
        await dispatcher.handle(event, now=BASE)  # the webhook is sent; e-mail asks for a redelivery
    assert len(webhook_receiver.requests) == 1 and smtp_server.received() == []
    await asyncio.sleep(1.1)  # the dead claim's lease runs out
    result = await dispatcher.handle(event, now=BASE)
    assert result.status == "delivered" and result.channels == ["email"]
    assert len(smtp_server.received()) == 1 and len(webhook_receiver.requests) == 1
    assert (await dispatcher.handle(event, now=BASE)).status == "duplicate"
    await dispatcher.aclose()
