"""Notifications for pending requests: render once, deliver through webhook and e-mail, once.

The host-agnostic half of the notification function: the Event Grid trigger (in
``hitl_core.functions``) builds a :class:`NotificationDispatcher` and calls
:meth:`NotificationDispatcher.handle` for each event. Importing this package loads no redis,
Azure SDK, httpx or aiosmtplib: each is imported inside the channel or store that uses it.
"""

from .dedup import DedupStore, InMemoryDedupStore, RedisDedupStore, SqliteDedupStore
from .dispatcher import (
    DEFAULT_DEDUP_TTL_SECONDS,
    DEFAULT_LEASE_SECONDS,
    NotificationChannel,
    NotificationDispatcher,
)
from .email import EmailChannel, message_id_for
from .models import (
    REQUEST_CREATED,
    REQUEST_ESCALATED,
    REQUEST_EVENT_TYPES,
    REQUEST_REMINDER,
    CloudEvent,
    DispatchResult,
    InvalidEventError,
    NoRecipientsError,
    Notification,
    NotificationDeliveryError,
    NotificationDispatchError,
    NotificationError,
    NotificationInFlightError,
    RequestView,
)
from .render import describe_response_schema, recipients_for, relative_time, render_notification
from .webhook import WebhookChannel, redact_url, sign, verify_signature

__all__ = [
    "DEFAULT_DEDUP_TTL_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "REQUEST_CREATED",
    "REQUEST_ESCALATED",
    "REQUEST_EVENT_TYPES",
    "REQUEST_REMINDER",
    "CloudEvent",
    "DedupStore",
    "DispatchResult",
    "EmailChannel",
    "InMemoryDedupStore",
    "InvalidEventError",
    "NoRecipientsError",
    "Notification",
    "NotificationChannel",
    "NotificationDeliveryError",
    "NotificationDispatchError",
    "NotificationDispatcher",
    "NotificationError",
    "NotificationInFlightError",
    "RedisDedupStore",
    "RequestView",
    "SqliteDedupStore",
    "WebhookChannel",
    "describe_response_schema",
    "message_id_for",
    "recipients_for",
    "redact_url",
    "relative_time",
    "render_notification",
    "sign",
    "verify_signature",
]
