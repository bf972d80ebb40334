"""NotificationDispatcher: what the Event Grid trigger calls for each event.

Order of work in :meth:`NotificationDispatcher.handle`:

1. events other than ``hitl.request.created|reminder|escalated`` -> ``ignored``;
2. validate the request view (a malformed one raises :class:`InvalidEventError` before any
   claim is taken);
3. claim ``"{channel}:{event id}"`` for every channel, with a short lease; channels whose key is
   already taken are skipped (``already_delivered``: an earlier delivery sent it, or a concurrent one is sending it);
   none left -> ``duplicate``, nothing sent;
4. render once, send to the claimed channels concurrently;
5. success -> confirm the key for the de-duplication window; failure -> release it and, after
   all channels finished, raise :class:`NotificationDispatchError`.

Why per channel: when the webhook fails and e-mail succeeds, raising makes Event Grid redeliver
the event; the redelivery finds e-mail's key confirmed and the webhook's released, so only the
webhook is retried and nobody gets the e-mail twice.

What remains at-least-once: a channel that delivered but whose confirmation could not be
stored, or a receiver that accepted a request whose response was lost (a timeout after the
receiver processed it), will be sent again on redelivery. Receivers deduplicate on the event
id (``X-HITL-Event-Id`` header / the e-mail's ``Message-ID``). A process that dies mid-send
holds its claim only for ``lease_seconds``; after that a redelivery sends again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..settings import Settings
from .dedup import DedupStore
from .email import EmailChannel
from .models import (
    REQUEST_EVENT_TYPES,
    CloudEvent,
    DispatchResult,
    NoRecipientsError,
    Notification,
    NotificationDispatchError,
    NotificationInFlightError,
    Recipient,
    RequestView,
)
from .render import render_notification
from .webhook import WebhookChannel

logger = logging.getLogger(__name__)

#: How long a delivered (channel, event) stays remembered: beyond Event Grid's 24 h retry window.
DEFAULT_DEDUP_TTL_SECONDS = 2 * 24 * 3600
#: How long an in-flight claim blocks other deliveries of the same event (longer than one send).
DEFAULT_LEASE_SECONDS = 30


RecipientResolver = Callable[[RequestView], Awaitable[list[Recipient]]]


@runtime_checkable
class NotificationChannel(Protocol):
    """A way to deliver a rendered notification. ``name`` must be unique per dispatcher."""

    name: str

    async def send(self, event: CloudEvent, notification: Notification) -> None:
        """Deliver or raise (``NoRecipientsError`` when there is nobody to deliver to)."""
        ...


class NotificationDispatcher:
    """Render request events and deliver them through every configured channel, once per channel."""

    def __init__(
        self,
        channels: Sequence[NotificationChannel],
        dedup: DedupStore,
        *,
        settings: Settings,
        dedup_ttl_seconds: int = DEFAULT_DEDUP_TTL_SECONDS,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
        recipients: RecipientResolver | None = None,
    ) -> None:
        names = [channel.name for channel in channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"channel names must be unique, repeated: {', '.join(duplicates)}")
        self.channels = list(channels)
        self.dedup = dedup
        self.settings = settings
        self.dedup_ttl_seconds = dedup_ttl_seconds
        self.lease_seconds = lease_seconds
        #: Who receives a request, each with a link of their own (the service resolves the directory).
        self.recipients = recipients

    @classmethod
    def from_settings(cls, settings: Settings, dedup: DedupStore, **options: Any) -> NotificationDispatcher:
        """Build the channels the settings configure: webhook if ``webhook_url``, e-mail if ``smtp_host``."""
        channels: list[NotificationChannel] = []
        if settings.webhook_url:
            if not settings.webhook_secret:
                logger.warning("HITL_WEBHOOK_SECRET is not set: webhook notifications are sent unsigned")
            channels.append(WebhookChannel(settings.webhook_url, settings.webhook_secret))
        if settings.smtp_host:
            channels.append(
                EmailChannel(
                    settings.smtp_host,
                    settings.smtp_port,
                    username=settings.smtp_username,
                    password=settings.smtp_password,
                    starttls=settings.smtp_starttls,
                    sender=settings.smtp_from,
                )
            )
        if not channels:
            logger.info("no notification channel configured (HITL_WEBHOOK_URL, HITL_SMTP_HOST unset)")
        return cls(channels, dedup, settings=settings, **options)

    async def handle(self, event: CloudEvent | Any, *, now: datetime | None = None) -> DispatchResult:
        """Deliver one event; raise :class:`NotificationDispatchError` if any channel failed.

        Raising is the point: the trigger lets it propagate, Event Grid redelivers, and only the
        channels that failed are tried again.
        """
        cloud_event = CloudEvent.coerce(event)
        if cloud_event.type not in REQUEST_EVENT_TYPES:
            return DispatchResult(
                status="ignored",
                event_id=cloud_event.id,
                event_type=cloud_event.type,
                reason=f"event type {cloud_event.type!r} does not ask anyone for a decision",
            )
        RequestView.from_event(cloud_event)  # fail before claiming anything
        if not self.channels:
            return DispatchResult(
                status="ignored",
                event_id=cloud_event.id,
                event_type=cloud_event.type,
                reason="no notification channel is configured",
            )

        claimed, already, in_flight = await self._claim(cloud_event.id)
        if in_flight and not claimed:
            raise NotificationInFlightError(cloud_event.id, in_flight)
        if not claimed:
            logger.info("event %s already delivered to %s; nothing to do", cloud_event.id, ", ".join(already))
            return DispatchResult(
                status="duplicate",
                event_id=cloud_event.id,
                event_type=cloud_event.type,
                already_delivered=already,
                reason="every channel already delivered this event id",
            )

        pending = {channel.name: channel for channel in claimed}
        delivered: list[str] = []
        skipped: dict[str, str] = {}
        failures: dict[str, BaseException] = {}
        try:
            people = await self.recipients(RequestView.from_event(cloud_event)) if self.recipients else []
            personal = [render_notification(cloud_event, self.settings, now=now, recipient=person)
                        for person in people]
            # the shared rendering is for channels that do not address people one by one (or nobody named)
            shared = not personal or any(not getattr(channel, "per_recipient", False) for channel in claimed)
            notification = render_notification(cloud_event, self.settings, now=now, recipients=people) if shared \
                else None
            outcomes = await asyncio.gather(
                *(self._send(channel, cloud_event, notification, personal) for channel in claimed),
                return_exceptions=True,
            )
            for channel, outcome in zip(claimed, outcomes, strict=True):
                if isinstance(outcome, NoRecipientsError):
                    skipped[channel.name] = str(outcome)
                    logger.warning("channel %s skipped event %s: %s", channel.name, cloud_event.id, outcome)
                elif isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome  # CancelledError, KeyboardInterrupt: not a delivery failure
                    failures[channel.name] = outcome
                    logger.error("channel %s failed for event %s: %s", channel.name, cloud_event.id, outcome)
                else:
                    delivered.append(channel.name)
            for name in [*delivered, *skipped]:
                await self.dedup.confirm(self._key(name, cloud_event.id), self.dedup_ttl_seconds)
                del pending[name]
        finally:
            # anything not confirmed (failed, or interrupted) must be retryable by redelivery
            for name in list(pending):
                await self._release(name, cloud_event.id)
        if failures:
            raise NotificationDispatchError(cloud_event.id, failures, delivered)
        if in_flight:
            raise NotificationInFlightError(cloud_event.id, in_flight)
        return DispatchResult(
            status="delivered",
            event_id=cloud_event.id,
            event_type=cloud_event.type,
            channels=delivered,
            already_delivered=already,
            skipped=skipped,
        )

    @staticmethod
    async def _send(channel: NotificationChannel, event: CloudEvent, notification: Notification | None,
                    personal: list[Notification]) -> None:
        """One message per recipient on channels that address people (each with their own link).

        ``notification`` (everyone in one) is None only when every channel addresses people one by one.
        """
        if personal and getattr(channel, "per_recipient", False):
            send_all = getattr(channel, "send_all", None)
            if send_all is not None:  # one connection for them all (e-mail)
                await send_all(event, personal)
                return
            for message in personal:
                await channel.send(event, message)
            return
        assert notification is not None, "rendered whenever a channel needs it"
        await channel.send(event, notification)

    async def aclose(self) -> None:
        """Close channels that hold connections (e.g. the webhook's HTTP client) and the de-duplication store."""
        for channel in self.channels:
            close = getattr(channel, "aclose", None)
            if close is not None:
                await close()
        await self.dedup.close()

    async def _claim(self, event_id: str) -> tuple[list[NotificationChannel], list[str], list[str]]:
        """Channels this delivery won, channels already sent, channels another delivery holds."""
        claimed: list[NotificationChannel] = []
        already: list[str] = []
        in_flight: list[str] = []
        try:
            for channel in self.channels:
                key = self._key(channel.name, event_id)
                if await self.dedup.claim(key, self.lease_seconds):
                    claimed.append(channel)
                elif await self.dedup.is_confirmed(key):
                    already.append(channel.name)
                else:
                    in_flight.append(channel.name)
        except BaseException:
            for channel in claimed:
                await self._release(channel.name, event_id)
            raise
        return claimed, already, in_flight

    async def _release(self, name: str, event_id: str) -> None:
        try:
            await self.dedup.release(self._key(name, event_id))
        except Exception:
            # the lease expires by itself; until then a redelivery sees a duplicate
            logger.exception("could not release claim %s for event %s", name, event_id)

    @staticmethod
    def _key(channel: str, event_id: str) -> str:
        return f"{channel}:{event_id}"
