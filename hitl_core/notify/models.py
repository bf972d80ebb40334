"""Data shapes of the notification path: the incoming CloudEvent, the request view it carries,
the rendered :class:`Notification`, the :class:`DispatchResult`, and the notify errors.

Why pydantic with ``extra="allow"``: the events are produced by another part of the service
(and, in production, pass through Event Grid), so newer producers may add fields. A consumer
that rejected unknown fields would turn every additive change into dead-lettered events; we
validate only what rendering needs and carry the rest through unchanged (the webhook forwards
the event as received).

Errors (all under :class:`hitl_core.errors.HitlError`)::

    HitlError
    └── NotificationError
        ├── InvalidEventError (ValueError)   a request event whose data is not a request view
        ├── NoRecipientsError                a channel had nobody to send to (not retried)
        ├── NotificationDeliveryError        one channel gave up (names the target, last status)
        └── NotificationDispatchError        handle(): one or more channels failed; the event
                                             must be redelivered (claims were released)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import HitlError
from ..events.models import REQUEST_EVENT_TYPES as _REQUEST_EVENT_TYPES
from ..events.models import EventType

REQUEST_CREATED = str(EventType.REQUEST_CREATED)
REQUEST_REMINDER = str(EventType.REQUEST_REMINDER)
REQUEST_ESCALATED = str(EventType.REQUEST_ESCALATED)

#: The event types that ask a person for a decision (the contract's own list, in
#: :mod:`hitl_core.events.models`); everything else is ignored by the dispatcher.
REQUEST_EVENT_TYPES: frozenset[str] = frozenset(str(t) for t in _REQUEST_EVENT_TYPES)


class NotificationError(HitlError):
    """Base of every error raised by :mod:`hitl_core.notify`."""


class InvalidEventError(NotificationError, ValueError):
    """The event is not a CloudEvent, or a request event's ``data`` is not a request view.

    Redelivery cannot fix this; the trigger may let Event Grid dead-letter it.
    """


class NoRecipientsError(NotificationError):
    """A channel had nobody to address (e.g. e-mail with no addresses and no defaults).

    The dispatcher records the channel as skipped instead of failing, because redelivering the
    same event would find nobody either.
    """


class NotificationDeliveryError(NotificationError):
    """One channel could not deliver after its last attempt.

    ``target`` is safe to log: a URL without credentials, query string or fragment, or
    ``host:port`` for SMTP. ``last_status`` is the last HTTP/SMTP status code seen, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        channel: str,
        target: str,
        attempts: int,
        last_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.channel = channel
        self.target = target
        self.attempts = attempts
        self.last_status = last_status


class NotificationDispatchError(NotificationError):
    """At least one channel failed while handling one event.

    The claims of the failed channels were released, so raising this from the trigger makes
    Event Grid redeliver and only those channels are tried again. ``failures`` maps channel
    name to its exception; ``delivered`` lists the channels that succeeded this time.
    """

    def __init__(self, event_id: str, failures: Mapping[str, BaseException], delivered: list[str]) -> None:
        detail = "; ".join(f"{name}: {exc}" for name, exc in failures.items())
        ok = ", ".join(delivered) if delivered else "none"
        super().__init__(
            f"notification for event {event_id!r} failed on {len(failures)} channel(s) ({detail}); "
            f"delivered: {ok}. The failed channels will be retried when the event is redelivered."
        )
        self.event_id = event_id
        self.failures = dict(failures)
        self.delivered = list(delivered)


class NotificationInFlightError(NotificationError):
    """Another delivery of this event holds a channel's claim (still sending, or its process died).

    Raised so that the event is redelivered: once that claim is confirmed the redelivery is a
    duplicate; once its lease runs out (a dead sender) the redelivery sends.
    """

    def __init__(self, event_id: str, channels: list[str]) -> None:
        super().__init__(
            f"event {event_id!r} is being delivered to {', '.join(channels)} by another delivery; retry later"
        )
        self.event_id = event_id
        self.channels = list(channels)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope as the notification function receives it."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    source: str = ""
    subject: str | None = None
    time: datetime | str | None = None
    specversion: str = "1.0"
    data: Any = None

    @classmethod
    def coerce(cls, value: Any) -> CloudEvent:
        """Accept a :class:`CloudEvent`, a mapping, or an Event Grid event object.

        The object form is duck-typed (``id``, ``event_type``, ``subject``, ``get_json()``, as
        ``azure.functions.EventGridEvent`` has) so this module never imports azure.
        """
        if isinstance(value, CloudEvent):
            return value
        try:
            if isinstance(value, Mapping):
                return cls.model_validate(dict(value))
            if hasattr(value, "get_json") and hasattr(value, "id"):
                return cls.model_validate(
                    {
                        "id": value.id,
                        "type": getattr(value, "event_type", None) or getattr(value, "type", None),
                        "source": getattr(value, "topic", None) or getattr(value, "source", None) or "",
                        "subject": getattr(value, "subject", None),
                        "time": getattr(value, "event_time", None) or getattr(value, "time", None),
                        "data": value.get_json(),
                    }
                )
        except ValidationError as exc:
            raise InvalidEventError(f"not a CloudEvent: {_errors(exc)}") from None
        raise InvalidEventError(f"not a CloudEvent: got {type(value).__name__}")


class RequestView(BaseModel):
    """The ``data`` of a request event: the request as the HTTP API shows it.

    ``reminder_number`` is set on ``hitl.request.reminder`` events (1 for the first reminder),
    ``escalated_from`` on ``hitl.request.escalated`` events (the previous approvers).
    ``escalation`` is set when a step of the request's escalation chain sent the event:
    ``{"step" (from 1), "of", "action", "mode", "from", "to", "missed_deadline"}``.
    """

    model_config = ConfigDict(extra="allow")

    call_id: str = Field(min_length=1)
    session_id: str = Field(min_length=1)
    workflow: str = Field(min_length=1)
    executor_id: str = ""
    request_type: str = ""
    data: Any = Field(default_factory=dict)
    response_schema: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    deadline: datetime | None = None
    approvers: list[str] = Field(default_factory=list)
    subject: str | None = None
    status: str = "pending"
    decide_url: str | None = None
    reminder_number: int | None = None
    escalated_from: list[str] = Field(default_factory=list)
    escalation: dict[str, Any] | None = None

    @field_validator("escalation", mode="before")
    @classmethod
    def _mapping_or_none(cls, value: Any) -> Any:
        """An escalation that is not an object is ignored (producers may change; the rest still renders)."""
        return value if isinstance(value, Mapping) else None

    @field_validator("created_at", "deadline")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        """A timestamp without an offset is taken as UTC (the service writes UTC everywhere)."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("response_schema", mode="before")
    @classmethod
    def _schema_or_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("approvers", "escalated_from", mode="before")
    @classmethod
    def _list_or_empty(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return value

    @classmethod
    def from_event(cls, event: CloudEvent) -> RequestView:
        """Validate a request event's data, naming the event when it does not fit."""
        try:
            return cls.model_validate(event.data)
        except ValidationError as exc:
            raise InvalidEventError(
                f"event {event.id!r} of type {event.type!r} does not carry a request view: {_errors(exc)}"
            ) from None


class Recipient(BaseModel):
    """One person a request is sent to, with the decision link minted for them alone.

    ``person_id`` is their directory id (the link decides as them); None for a fallback
    address, whose link asks the reader to sign in.
    """

    email: str
    person_id: str | None = None
    name: str | None = None
    decide_url: str | None = None
    #: When the recipient is a delegate: the absent approver (directory id) they receive it for.
    on_behalf_of: str | None = None


class Notification(BaseModel):
    """A rendered message, ready for any channel.

    ``personal`` is set when the message was rendered for one recipient (their own link inside).
    """

    event_id: str
    event_type: str
    workflow: str
    session_id: str
    call_id: str
    subject: str
    text: str
    html: str
    recipients: list[str]
    decide_url: str
    personal: Recipient | None = None


class DispatchResult(BaseModel):
    """What :meth:`NotificationDispatcher.handle` did with one event.

    ``channels``: delivered by this call. ``already_delivered``: skipped because an earlier
    delivery of the same event id reached them. ``skipped``: channel -> reason it had nothing
    to do (e.g. no recipients). ``reason`` explains ``ignored`` and ``duplicate``.
    """

    status: Literal["delivered", "duplicate", "ignored"]
    event_id: str
    event_type: str
    channels: list[str] = Field(default_factory=list)
    already_delivered: list[str] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    reason: str | None = None


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )
