"""E-mail channel: multipart/alternative (plain text + HTML) over SMTP.

Why the ``Message-ID`` is derived from the event id: Event Grid delivers at least once, and a
failed dispatch is redelivered; if a copy does get sent twice, mail clients and servers that
deduplicate on ``Message-ID`` (and people reading headers) can recognise it as the same
notification. ``X-HITL-Event-Id``, ``X-HITL-Session`` and ``X-HITL-Call-Id`` let mail rules and
support staff tie a message back to the request.

Transport: ``aiosmtplib`` when it is installed (async, no thread), else the standard library's
``smtplib`` in a worker thread. STARTTLS (``starttls=True``, the default for port 587) is
*required* when asked for: a server that does not offer it fails the delivery instead of
silently sending in clear text. ``use_tls=True`` is implicit TLS (port 465). Login happens only
when ``username`` is set. The password is never logged, never put in an error message and never
shown by ``repr``.

Connections are kept for the next request (aiosmtplib only): a connection that finished its
messages goes back to a small pool and the next notification sends on it, without a new TCP
connection, greeting, EHLO, STARTTLS handshake or AUTH. A kept connection is used only within
``keep_alive_seconds`` of its last message (well under the five minutes RFC 5321 lets a server
wait) and only on the event loop that opened it. One the relay has closed meanwhile fails on its
first command, before any message went over it, and is replaced once by a fresh connection, so
nothing is sent twice.

SMTP errors are otherwise not retried here: the dispatcher releases the claim and Event Grid's
redelivery (with its own backoff) is the retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import smtplib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.charset import BASE64, QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formataddr, formatdate, parseaddr
from typing import Any, Literal

from .models import CloudEvent, NoRecipientsError, Notification, NotificationDeliveryError

logger = logging.getLogger(__name__)

Backend = Literal["auto", "aiosmtplib", "smtplib"]


#: Text parts that need encoding (a long decision link, non-ASCII text): quoted-printable UTF-8.
_QUOTED_PRINTABLE = Charset("utf-8")
_QUOTED_PRINTABLE.body_encoding = QP
#: Non-ASCII header text as base64 encoded words (quoted-printable ones cost a length check per character).
_HEADER_WORDS = Charset("utf-8")
_HEADER_WORDS.header_encoding = BASE64


def _text_part(content: str, subtype: str) -> MIMENonMultipart:
    """One alternative, encoded only when it has to be: 7bit ASCII when every line fits in 78 characters."""
    part = MIMENonMultipart("text", subtype)
    as_is = content.isascii() and all(len(line) <= 78 for line in content.splitlines())
    part.set_payload(content, "us-ascii" if as_is else _QUOTED_PRINTABLE)
    del part["MIME-Version"]  # said once, on the message
    return part


def _header_text(name: str, value: str) -> str:
    """A header value as is when ASCII, else RFC 2047 encoded words folded to fit after ``name: ``."""
    return value if value.isascii() else Header(value, _HEADER_WORDS, header_name=name).encode()


def _address_list(values: Sequence[str]) -> str:
    """``Name <address>`` entries, display names RFC 2047 encoded when they are not ASCII."""
    entries = []
    for value in values:
        name, address = parseaddr(value)
        entries.append(formataddr((name, address), charset=_HEADER_WORDS) if address else value)
    return ", ".join(entries)


@dataclass
class _KeptConnection:
    """An SMTP connection between two requests: who opened it (loop) and when it was last used."""

    smtp: Any
    loop: asyncio.AbstractEventLoop
    idle_since: float


def message_id_for(event_id: str, domain: str = "hitl.localhost") -> str:
    """A stable ``Message-ID`` for one event: the same event always yields the same id."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:40]
    return f"<hitl.{digest}@{domain}>"


class EmailChannel:
    """Send each notification as one e-mail to its recipients.

    ``per_recipient``: the dispatcher hands this channel one notification per person (each with
    the decision link minted for that person), so nobody receives a link that decides as someone else.
    """

    per_recipient = True

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        sender: str,
        timeout: float = 10,
        use_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        backend: Backend = "auto",
        name: str = "email",
        keep_alive_seconds: float = 30,
        max_kept_connections: int = 8,
    ) -> None:
        if starttls and use_tls:
            raise ValueError("starttls and use_tls are exclusive: STARTTLS upgrades a plain connection")
        if not parseaddr(sender)[1]:
            raise ValueError(f"sender must be an e-mail address, got {sender!r}")
        self.name = name
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.starttls = starttls
        self.use_tls = use_tls
        self.sender = sender
        # what every message needs of the sender, worked out once
        self._envelope_from = parseaddr(sender)[1]
        self._from_header = _address_list([sender])
        self._message_id_domain = self._envelope_from.rpartition("@")[2] or "hitl.localhost"
        self.timeout = timeout
        self.tls_context = tls_context
        self.backend = backend
        #: how long an idle connection may wait for the next request (0: a connection per request)
        self.keep_alive_seconds = keep_alive_seconds
        #: idle connections kept at most (the topic delivers several events at once)
        self.max_kept_connections = max_kept_connections
        self._kept: list[_KeptConnection] = []

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"EmailChannel({self.target!r}, sender={self.sender!r}, starttls={self.starttls}, "
            f"use_tls={self.use_tls}, username={self.username!r}, password={'***' if self._password else None})"
        )

    def build_message(self, event: CloudEvent, notification: Notification) -> Message:
        """The message that :meth:`send` would send (useful for previews and tests).

        Built with the standard library's ``email.mime`` classes, whose headers are plain strings:
        the ``email.policy.default`` API parses every header set on a message into a tree and folds
        it again when sending, which was about two thirds of the cost of e-mailing a request.
        """
        if not notification.recipients:
            raise NoRecipientsError(
                f"no e-mail recipients for event {event.id!r}: no approver is an e-mail address and "
                "HITL_NOTIFY_DEFAULT_RECIPIENTS is empty"
            )
        # a boundary of our own: the generator would otherwise compile a regex per message to make one
        message = MIMEMultipart("alternative", boundary=f"=_hitl_{secrets.token_hex(16)}")
        message["Subject"] = _header_text("Subject", notification.subject)
        message["From"] = self._from_header
        message["To"] = _address_list(notification.recipients)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        personal = notification.personal
        message["Message-ID"] = message_id_for(f"{event.id}:{personal.email.lower()}" if personal else event.id,
                                               self._message_id_domain)
        for name, value in (("X-HITL-Event-Id", event.id), ("X-HITL-Event-Type", event.type),
                            ("X-HITL-Session", notification.session_id), ("X-HITL-Call-Id", notification.call_id),
                            ("X-HITL-Workflow", notification.workflow)):
            message[name] = _header_text(name, _header_safe(value))
        # suppress vacation auto-replies to a machine sender
        message["Auto-Submitted"] = "auto-generated"
        message.attach(_text_part(notification.text, "plain"))
        message.attach(_text_part(notification.html, "html"))
        return message

    async def send(self, event: CloudEvent, notification: Notification) -> None:
        """Send one message or raise :class:`NotificationDeliveryError` (:class:`NoRecipientsError`
        if there is nobody to send to)."""
        await self.send_all(event, [notification])

    async def send_all(self, event: CloudEvent, notifications: Sequence[Notification]) -> None:
        """Send one message per notification (each person's own) over one SMTP connection.

        Why one connection: a request asks several people, and a connection per message doubles the
        handshakes (TCP, EHLO, STARTTLS, AUTH) for the relay and for this process. Raises as
        :meth:`send` does; a failure part-way leaves the channel to be retried whole, as before
        (each message's ``Message-ID`` is stable, so a copy sent twice is recognisable). The
        ``smtplib`` fallback sends each message on a connection of its own, from a thread.
        """
        messages = [(self.build_message(event, n), list(n.recipients)) for n in notifications]
        envelope_from = self._envelope_from
        try:
            if self._choose_backend() == "aiosmtplib":
                await self._send_aiosmtplib(messages, envelope_from)
            else:
                for message, recipients in messages:
                    await asyncio.to_thread(self._send_smtplib, message, envelope_from, recipients)
        except NotificationDeliveryError:
            raise
        except Exception as exc:
            raise self._failure(exc) from None
        logger.info("e-mail for event %s sent via %s: %d message(s) to %d recipient(s)", event.id, self.target,
                    len(messages), sum(len(recipients) for _, recipients in messages))

    def _choose_backend(self) -> Literal["aiosmtplib", "smtplib"]:
        if self.backend != "auto":
            return self.backend
        try:
            import aiosmtplib  # noqa: F401
        except ImportError:
            return "smtplib"
        return "aiosmtplib"

    async def _send_aiosmtplib(self, messages: Sequence[tuple[Message, list[str]]], sender: str) -> None:
        smtp, kept = await self._connection()
        unsent = list(messages)
        while True:
            sent_here = 0
            try:
                while unsent:
                    message, recipients = unsent[0]
                    errors, _reply = await smtp.send_message(message, sender=sender, recipients=recipients)
                    unsent.pop(0)
                    sent_here += 1
                    refused = {rcpt: resp for rcpt, resp in errors.items() if resp.code >= 300}
                    if refused:
                        self._partial(refused.keys())
            except BaseException as exc:
                smtp.close()
                if kept and not sent_here and _closed_by_server(exc):
                    # the relay dropped the kept connection while it was idle: one fresh try
                    logger.debug("SMTP %s had closed a kept connection (%s); reconnecting", self.target, exc)
                    smtp, kept = await self._connect(), False
                    continue
                raise
            self._keep(smtp)
            return

    async def _connection(self) -> tuple[Any, bool]:
        """A kept connection still open and fresh enough (True), else a new one (False)."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        while self._kept:
            entry = self._kept.pop()
            usable = (entry.loop is loop and now - entry.idle_since < self.keep_alive_seconds
                      and entry.smtp.is_connected)
            if usable:
                return entry.smtp, True
            if entry.loop is loop:  # another loop's transport can only be closed by that loop
                entry.smtp.close()
        return await self._connect(), False

    async def _connect(self) -> Any:
        import aiosmtplib

        smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, username=self.username,
                               password=self._password, start_tls=self.starttls, use_tls=self.use_tls,
                               timeout=self.timeout, tls_context=self.tls_context)
        await smtp.connect()
        return smtp

    def _keep(self, smtp: Any) -> None:
        if self.keep_alive_seconds > 0 and len(self._kept) < self.max_kept_connections:
            self._kept.append(_KeptConnection(smtp, asyncio.get_running_loop(), time.monotonic()))
        else:
            smtp.close()

    async def aclose(self) -> None:
        """Say QUIT on this event loop's kept connections (at once, a second at most) and forget them all.

        Why a cap: a relay that stopped answering must not hold up the shutdown of the process.
        """
        loop = asyncio.get_running_loop()
        kept, self._kept = self._kept, []
        ours = [entry.smtp for entry in kept if entry.loop is loop]
        await asyncio.gather(*(self._quit(smtp) for smtp in ours))

    async def _quit(self, smtp: Any) -> None:
        try:
            if smtp.is_connected:
                await smtp.quit(timeout=1)
        except Exception as exc:  # the relay went away first; closing is all that is left
            logger.debug("SMTP %s: no answer to QUIT (%s); closing", self.target, type(exc).__name__)
        finally:
            smtp.close()

    def _send_smtplib(self, message: Message, sender: str, recipients: list[str]) -> None:
        context = self.tls_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.use_tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self._password or "")
            refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
        if refused:
            self._partial(refused.keys())

    def _partial(self, refused: Any) -> None:
        """Some recipients were refused: the others got the message, so do not resend to all.

        Logged rather than raised: redelivery would send a second copy to everyone accepted.
        """
        logger.warning("SMTP %s refused %d recipient(s); the others were sent the message", self.target, len(refused))

    def _failure(self, exc: BaseException) -> NotificationDeliveryError:
        status = _smtp_status(exc)
        detail = f"{type(exc).__name__}: {exc}"
        if self._password:
            detail = detail.replace(self._password, "***")
        return NotificationDeliveryError(
            f"e-mail via SMTP {self.target} failed; last status: {status if status is not None else 'none'} ({detail})",
            channel=self.name,
            target=self.target,
            attempts=1,
            last_status=status,
        )


def _closed_by_server(exc: BaseException) -> bool:
    """The error a kept connection gives when the relay closed it while idle: lost, or told 421."""
    return isinstance(exc, ConnectionError) or _smtp_status(exc) == 421


def _smtp_status(exc: BaseException) -> int | None:
    for attribute in ("code", "smtp_code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    recipients = getattr(exc, "recipients", None)
    if isinstance(recipients, dict) and recipients:
        first = next(iter(recipients.values()))
        if isinstance(first, tuple) and first and isinstance(first[0], int):
            return first[0]
    return None


def _header_safe(value: str) -> str:
    return " ".join(value.split()) or "-"
