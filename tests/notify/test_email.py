"""EmailChannel against a real aiosmtpd server on loopback (plain, AUTH, STARTTLS; both backends)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from hitl_core.notify import (
    CloudEvent,
    EmailChannel,
    NoRecipientsError,
    Notification,
    NotificationDeliveryError,
    message_id_for,
    render_notification,
)
from tests.support.redis_server import free_port

from .conftest import BASE, SMTP_PASSWORD, SMTP_USER, SmtpServer, make_event, personal_notes

BACKENDS = ["aiosmtplib", "smtplib"]

# aiosmtpd warns about AUTH without TLS; the plain-text AUTH tests do that on purpose (loopback)
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


def _event_and_note(**request: Any) -> tuple[CloudEvent, Notification]:
    event = CloudEvent.coerce(make_event(**request))
    return event, render_notification(event, now=BASE)


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sends_multipart_with_summary_deadline_link_and_escaped_html(
    smtp_server: SmtpServer, backend: str
) -> None:
    evil = "<script>alert(1)</script>"
    event, note = _event_and_note(
        data={"title": "Publish the Q1 launch post", "body": evil},
        approvers=["alice@example.com", "bob@example.org", "editors"],
    )
    channel = EmailChannel("127.0.0.1", smtp_server.port, starttls=False, sender="HITL <hitl@example.net>",
                           backend=backend)  # type: ignore[arg-type]
    await channel.send(event, note)

    [envelope] = smtp_server.envelopes()
    assert envelope.mail_from == "hitl@example.net"
    assert envelope.rcpt_tos == ["alice@example.com", "bob@example.org"]
    [message] = smtp_server.received()
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "[hitl] Approval needed: content-review \u2014 Publish the Q1 launch post"
    assert message["To"] == "alice@example.com, bob@example.org"
    assert message["Message-ID"] == message_id_for("evt-1", "example.net")
    assert message["X-HITL-Event-Id"] == "evt-1"
    assert message["X-HITL-Session"] == "sess-42"
    assert message["X-HITL-Call-Id"] == "call-1"
    text, html = _parts(message)
    for part in (text, html):
        assert "Publish the Q1 launch post" in part
        assert "2025-03-03T12:00:00+00:00" in part
        assert "https://hitl.example.com/decide?token=abc" in part
    assert evil in text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_message_id_is_stable_per_event(smtp_server: SmtpServer) -> None:
    channel = EmailChannel("127.0.0.1", smtp_server.port, starttls=False, sender="hitl@example.net")
    event, note = _event_and_note()
    await channel.send(event, note)
    await channel.send(event, note)
    other, other_note = _event_and_note(event_id="evt-2")
    await channel.send(other, other_note)
    ids = [m["Message-ID"] for m in smtp_server.received()]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_login_required(smtp_factory: Callable[..., SmtpServer], backend: str) -> None:
    server = smtp_factory(auth=True)
    event, note = _event_and_note()
    channel = EmailChannel("127.0.0.1", server.port, username=SMTP_USER, password=SMTP_PASSWORD,
                           starttls=False, sender="hitl@example.net", backend=backend)  # type: ignore[arg-type]
    await channel.send(event, note)
    assert len(server.received()) == 1
    assert server.auth_attempts[-1][1] == SMTP_USER.encode()

    anonymous = EmailChannel("127.0.0.1", server.port, starttls=False, sender="hitl@example.net",
                             backend=backend)  # type: ignore[arg-type]
    with pytest.raises(NotificationDeliveryError) as caught:
        await anonymous.send(event, note)
    assert caught.value.last_status == 530  # authentication required
    assert len(server.received()) == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_wrong_password_fails_without_showing_it(
    smtp_factory: Callable[..., SmtpServer], backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = smtp_factory(auth=True)
    event, note = _event_and_note()
    wrong = "wrong-" + SMTP_PASSWORD
    channel = EmailChannel("127.0.0.1", server.port, username=SMTP_USER, password=wrong,
                           starttls=False, sender="hitl@example.net", backend=backend)  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NotificationDeliveryError) as caught:
        await channel.send(event, note)
    assert caught.value.last_status == 535
    assert caught.value.target == f"127.0.0.1:{server.port}"
    assert wrong not in str(caught.value) and wrong not in repr(channel) and wrong not in caplog.text
    assert server.received() == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_starttls_with_login(
    smtp_factory: Callable[..., SmtpServer], client_tls_context: ssl.SSLContext, backend: str
) -> None:
    server = smtp_factory(auth=True, starttls=True)
    event, note = _event_and_note()
    channel = EmailChannel("127.0.0.1", server.port, username=SMTP_USER, password=SMTP_PASSWORD,
                           starttls=True, sender="hitl@example.net", tls_context=client_tls_context,
                           backend=backend)  # type: ignore[arg-type]
    await channel.send(event, note)
    [message] = server.received()
    assert message["X-HITL-Event-Id"] == "evt-1"


async def test_starttls_with_untrusted_certificate_fails(smtp_factory: Callable[..., SmtpServer]) -> None:
    server = smtp_factory(auth=True, starttls=True)
    event, note = _event_and_note()
    channel = EmailChannel("127.0.0.1", server.port, username=SMTP_USER, password=SMTP_PASSWORD,
                           starttls=True, sender="hitl@example.net")  # system CAs: self-signed is refused
    with pytest.raises(NotificationDeliveryError):
        await channel.send(event, note)
    assert server.received() == []


async def test_starttls_required_but_not_offered_fails(smtp_server: SmtpServer) -> None:
    event, note = _event_and_note()
    channel = EmailChannel("127.0.0.1", smtp_server.port, starttls=True, sender="hitl@example.net")
    with pytest.raises(NotificationDeliveryError):
        await channel.send(event, note)
    assert smtp_server.received() == []  # never downgraded to clear text


async def test_no_recipients_is_its_own_error(smtp_server: SmtpServer) -> None:
    event, note = _event_and_note(approvers=["editors"])
    channel = EmailChannel("127.0.0.1", smtp_server.port, starttls=False, sender="hitl@example.net")
    with pytest.raises(NoRecipientsError, match="HITL_NOTIFY_DEFAULT_RECIPIENTS"):
        await channel.send(event, note)
    assert smtp_server.received() == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_server_down(backend: str) -> None:
    event, note = _event_and_note()
    port = free_port()
    channel = EmailChannel("127.0.0.1", port, starttls=False, sender="hitl@example.net", timeout=2,
                           backend=backend)  # type: ignore[arg-type]
    with pytest.raises(NotificationDeliveryError, match=f"SMTP 127.0.0.1:{port} failed"):
        await channel.send(event, note)


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="exclusive"):
        EmailChannel("h", 465, starttls=True, use_tls=True, sender="a@b.c")
    with pytest.raises(ValueError, match="sender"):
        EmailChannel("h", 25, sender="")
    assert "***" in repr(EmailChannel("h", 25, username="u", password="p4ss", sender="a@b.c"))
    assert "p4ss" not in repr(EmailChannel("h", 25, username="u", password="p4ss", sender="a@b.c"))


@pytest.mark.parametrize("starttls", [False, True])
async def test_each_persons_message_goes_over_one_connection(
        smtp_factory: Callable[..., SmtpServer], client_tls_context: ssl.SSLContext, starttls: bool) -> None:
    """A request that asks three people: three messages of their own (each their own link), one SMTP
    connection (with its TLS handshake and login) instead of three."""
    server = smtp_factory(auth=True, starttls=starttls)
    event = CloudEvent.coerce(make_event())
    people = ["ann@example.com", "bob@example.com", "cat@example.com"]
    notes = personal_notes(event, *people)
    channel = EmailChannel("127.0.0.1", server.port, username=SMTP_USER, password=SMTP_PASSWORD,
                           starttls=starttls, sender="hitl@example.net", tls_context=client_tls_context)
    await channel.send_all(event, notes)
    assert [e.rcpt_tos for e in server.envelopes()] == [[p] for p in people]
    assert len(set(server.sessions)) == 1 and len(server.auth_attempts) == 1

    refusing = EmailChannel("127.0.0.1", server.port, username=SMTP_USER, password="wrong",
                            starttls=starttls, sender="hitl@example.net", tls_context=client_tls_context)
    with pytest.raises(NotificationDeliveryError) as caught:  # a failure is the channel's, to be retried
        await refusing.send_all(event, notes)
    assert caught.value.last_status == 535 and "wrong" not in str(caught.value)
    assert len(server.received()) == 3


@pytest.mark.parametrize("starttls", [False, True])
async def test_the_connection_is_kept_for_the_next_request(
        smtp_factory: Callable[..., SmtpServer], client_tls_context: ssl.SSLContext, starttls: bool) -> None:
    """Three requests, six messages: one connection, one TLS handshake and login, QUIT at close."""
    server = smtp_factory(auth=True, starttls=starttls)
    channel = EmailChannel("127.0.0.1", server.port, username=SMTP_USER, password=SMTP_PASSWORD,
                           starttls=starttls, sender="hitl@example.net", tls_context=client_tls_context)
    for number in range(3):
        event = CloudEvent.coerce(make_event(event_id=f"evt-{number}"))
        await channel.send_all(event, personal_notes(event, "ann@example.com", "bob@example.com"))
    assert len(server.received()) == 6
    assert len(set(server.sessions)) == 1 and len(server.auth_attempts) == 1
    await channel.aclose()
    assert channel._kept == []
    event = CloudEvent.coerce(make_event(event_id="evt-after-close"))
    await channel.send(event, personal_notes(event, "cat@example.com")[0])  # closing only forgets connections
    assert len(set(server.sessions)) == 2
    await channel.aclose()


async def test_a_connection_the_relay_timed_out_is_replaced(smtp_factory: Callable[..., SmtpServer]) -> None:
    """The relay says 421 and closes an idle connection: the next request opens a new one and sends once."""
    server = smtp_factory(idle_timeout=0.3)
    channel = EmailChannel("127.0.0.1", server.port, starttls=False, sender="hitl@example.net")
    event = CloudEvent.coerce(make_event())
    await channel.send(event, personal_notes(event, "ann@example.com")[0])
    await asyncio.sleep(0.8)
    await channel.send(event, personal_notes(event, "bob@example.com")[0])
    assert [e.rcpt_tos for e in server.envelopes()] == [["ann@example.com"], ["bob@example.com"]]
    assert len(set(server.sessions)) == 2
    await channel.aclose()


async def test_a_connection_lost_unseen_is_replaced_once(smtp_factory: Callable[..., SmtpServer]) -> None:
    """The relay restarts between two requests and the kept connection still looks open: its first
    command fails, a fresh connection to the new relay sends the message, and only once."""
    first = smtp_factory()
    channel = EmailChannel("127.0.0.1", first.port, starttls=False, sender="hitl@example.net")
    event = CloudEvent.coerce(make_event())
    await channel.send(event, personal_notes(event, "ann@example.com")[0])
    first.stop()
    second = smtp_factory(port=first.port)
    assert channel._kept[0].smtp.is_connected  # nothing told this process yet
    await channel.send_all(event, personal_notes(event, "bob@example.com", "cat@example.com"))
    assert [e.rcpt_tos for e in first.envelopes()] == [["ann@example.com"]]
    assert [e.rcpt_tos for e in second.envelopes()] == [["bob@example.com"], ["cat@example.com"]]
    assert len(set(second.sessions)) == 1
    await channel.aclose()


async def test_a_fresh_connection_that_fails_is_not_retried() -> None:
    """Only a kept connection is retried: a relay that is down fails the request at once."""
    port = free_port()
    channel = EmailChannel("127.0.0.1", port, starttls=False, sender="hitl@example.net", timeout=2)
    event = CloudEvent.coerce(make_event())
    with pytest.raises(NotificationDeliveryError, match=f"SMTP 127.0.0.1:{port} failed"):
        await channel.send(event, personal_notes(event, "ann@example.com")[0])
    assert channel._kept == []


async def test_concurrent_requests_and_the_limits_of_keeping(smtp_server: SmtpServer) -> None:
    """Requests at the same time each get a connection; at most ``max_kept_connections`` are kept,
    none older than ``keep_alive_seconds``, and ``keep_alive_seconds=0`` keeps none."""
    channel = EmailChannel("127.0.0.1", smtp_server.port, starttls=False, sender="hitl@example.net",
                           max_kept_connections=2, keep_alive_seconds=0.3)
    events = [CloudEvent.coerce(make_event(event_id=f"evt-{n}")) for n in range(3)]
    await asyncio.gather(*(channel.send(e, personal_notes(e, "ann@example.com")[0]) for e in events))
    assert len(set(smtp_server.sessions)) == 3 and len(channel._kept) == 2
    await channel.send(events[0], personal_notes(events[0], "bob@example.com")[0])
    assert len(set(smtp_server.sessions)) == 3  # a kept one
    await asyncio.sleep(0.4)
    await channel.send(events[0], personal_notes(events[0], "cat@example.com")[0])
    assert len(set(smtp_server.sessions)) == 4  # the kept ones were too old
    await channel.aclose()

    one_each = EmailChannel("127.0.0.1", smtp_server.port, starttls=False, sender="hitl@example.net",
                            keep_alive_seconds=0)
    for person in ("dan@example.com", "eve@example.com"):
        await one_each.send(events[0], personal_notes(events[0], person)[0])
    assert len(set(smtp_server.sessions)) == 6 and one_each._kept == []


def test_messages_read_back_as_written() -> None:
    """What goes on the wire (aiosmtplib's own flattening), read back by the standard library's
    modern parser: every header and both alternatives as the notification says them, non-ASCII
    in encoded words or quoted-printable, no line over 78 characters, nothing encoded that need not be."""
    import email.policy

    from aiosmtplib.email import flatten_message

    event = CloudEvent.coerce(make_event())
    note = render_notification(event, now=BASE).model_copy(update={
        "recipients": ["Zoë Überprüfer <zoe@example.com>", "bob@example.com"],
        "subject": "Überprüfung — «Q1» " * 4 + "fin",
        "text": "Plain and short.\nDecide: https://hitl.example.com/decide?token=" + "t0k3n" * 30 + "\n",
    })
    channel = EmailChannel("127.0.0.1", 25, starttls=False, sender="HITL Bot <hitl@example.net>")
    wire = flatten_message(channel.build_message(event, note))
    assert wire.isascii() and max(len(line) for line in wire.splitlines()) <= 78
    read = email.message_from_bytes(wire, policy=email.policy.default)
    assert isinstance(read, EmailMessage)
    assert str(read["Subject"]) == note.subject
    assert [(a.display_name, a.addr_spec) for a in read["To"].addresses] == [
        ("Zoë Überprüfer", "zoe@example.com"), ("", "bob@example.com")]
    assert read["From"].addresses[0].display_name == "HITL Bot"
    assert read["Message-ID"] == message_id_for("evt-1", "example.net")
    assert (read["X-HITL-Event-Id"], read["X-HITL-Session"], read["X-HITL-Call-Id"], read["X-HITL-Workflow"]) == (
        "evt-1", note.session_id, note.call_id, note.workflow)
    assert read["Auto-Submitted"] == "auto-generated" and read.get_content_type() == "multipart/alternative"
    text, html = _parts(read)
    assert (text, html) == (note.text, note.html)
    ascii_short = render_notification(event, now=BASE).model_copy(update={"text": "Short.\n", "recipients": ["a@b.c"]})
    plain = channel.build_message(event, ascii_short).get_payload()[0]
    assert plain["Content-Transfer-Encoding"] == "7bit" and "MIME-Version" not in plain
    [long_text, rich] = channel.build_message(event, note).get_payload()
    assert long_text["Content-Transfer-Encoding"] == rich["Content-Transfer-Encoding"] == "quoted-printable"
    boundaries = {channel.build_message(event, note).get_boundary() for _ in range(3)}
    assert len(boundaries) == 3 and all(b and b not in note.text + note.html for b in boundaries)
