"""A local SMTP sink, so the demo's notification e-mails can be read without a mail server.

The app sends e-mail with its normal SMTP settings; locally they point here::

    HITL_SMTP_HOST=127.0.0.1  HITL_SMTP_PORT=<sink port>  HITL_SMTP_STARTTLS=false

The sink accepts every message (no TLS; AUTH is accepted with any credentials so an app configured
with a user name still works — credentials are never stored or logged), parses it with the
standard library's :mod:`email` package and keeps it in a :class:`Mailbox`: in memory for
``GET /api/_dev/mailbox`` and appended to ``{data_dir}/mailbox.jsonl`` so a restart keeps it and
a developer can ``tail -f`` it.

Why a thread: the SMTP server runs its own event loop on a background thread. An app that sends
mail with blocking :mod:`smtplib` from ``async`` code would otherwise dead-lock a sink living on
the host's own loop. The listening socket is bound in :meth:`SmtpSink.bind` before anything
starts, so the port (``0`` picks a free one) is known before the app is imported and configured.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import socket
import threading
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

__all__ = ["Mailbox", "SmtpSink", "parse_message"]

log = logging.getLogger("hitl.devhost.smtp")

MailRecord = dict[str, Any]


def _text(part: Message | None) -> str | None:
    """The decoded text of a MIME part, or ``None`` (a broken charset must not lose the mail)."""
    if part is None:
        return None
    try:
        content = part.get_content() if isinstance(part, EmailMessage) else part.get_payload(decode=True)
    except (LookupError, ValueError, KeyError):
        content = part.get_payload(decode=True)
    if isinstance(content, bytes):
        return content.decode("utf-8", errors="replace")
    return content if isinstance(content, str) else None


def parse_message(raw: bytes, *, mail_from: str, rcpt_tos: list[str]) -> MailRecord:
    """Parse one received message into the JSON record the mailbox serves.

    ``from``/``to``/``cc``/``subject`` come from the headers (decoded, RFC 2047 words included);
    ``envelope`` keeps what the SMTP client actually said (``MAIL FROM``/``RCPT TO``), which is
    where BCC recipients show up.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    headers: dict[str, str] = {}
    for name, value in msg.items():
        text = str(value)
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[dict[str, Any]] = []
    if isinstance(msg, EmailMessage):
        text_body = _text(msg.get_body(preferencelist=("plain",)))
        html_body = _text(msg.get_body(preferencelist=("html",)))
        for part in msg.iter_attachments():
            payload = part.get_payload(decode=True)
            attachments.append({
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "size": len(payload) if isinstance(payload, bytes) else 0,
            })

    def addresses(name: str) -> list[str]:
        value = msg.get(name)
        if value is None:
            return []
        addrs = getattr(value, "addresses", None)
        if addrs:
            return [str(a.addr_spec) for a in addrs]
        return [a.strip() for a in str(value).split(",") if a.strip()]

    sender = addresses("From")
    return {
        "id": uuid.uuid4().hex,
        "received_at": datetime.now(UTC).isoformat(),
        "envelope": {"mail_from": mail_from, "rcpt_tos": list(rcpt_tos)},
        "from": sender[0] if sender else mail_from,
        "to": addresses("To") or list(rcpt_tos),
        "cc": addresses("Cc"),
        "subject": str(msg.get("Subject", "")),
        "date": str(msg["Date"]) if msg.get("Date") else None,
        "message_id": str(msg["Message-ID"]) if msg.get("Message-ID") else None,
        "text": text_body,
        "html": html_body,
        "headers": headers,
        "attachments": attachments,
        "size": len(raw),
    }


class Mailbox:
    """Received messages, oldest first; thread-safe; optionally mirrored to a JSON Lines file.

    The SMTP thread appends, the HTTP handlers read: one lock guards both the list and the file.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._messages: list[MailRecord] = []
        if path is not None and path.exists():
            self._messages = self._load(path)

    @staticmethod
    def _load(path: Path) -> list[MailRecord]:
        records: list[MailRecord] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("skipping unreadable line %d of %s", number, path)
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    @property
    def path(self) -> Path | None:
        """The JSON Lines file the messages are appended to (``None``: memory only)."""
        return self._path

    def add(self, record: MailRecord) -> None:
        """Store one parsed message (and append it to the file)."""
        with self._lock:
            self._messages.append(record)
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def messages(self) -> list[MailRecord]:
        """A snapshot of every message, newest last."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> int:
        """Forget every message (and truncate the file); answers how many were dropped."""
        with self._lock:
            count = len(self._messages)
            self._messages.clear()
            if self._path is not None and self._path.exists():
                self._path.write_text("", encoding="utf-8")
            return count


class _Handler:
    """aiosmtpd handler: parse and store every message, never reject one."""

    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="replace")
        try:
            record = parse_message(raw, mail_from=str(envelope.mail_from or ""), rcpt_tos=list(envelope.rcpt_tos))
        except Exception:  # a malformed mail must not kill the sink; keep what we can
            log.exception("could not parse a received message; storing it raw")
            record = {
                "id": uuid.uuid4().hex, "received_at": datetime.now(UTC).isoformat(),
                "envelope": {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos)},
                "from": envelope.mail_from, "to": list(envelope.rcpt_tos), "cc": [], "subject": "",
                "text": raw.decode("utf-8", errors="replace"), "html": None, "headers": {},
                "attachments": [], "size": len(raw),
            }
        self._mailbox.add(record)
        log.info("mail from %s to %s: %s", record["from"], ", ".join(record["to"]), record["subject"])
        return "250 Message accepted for delivery"


def _accept_any_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    """Accept every AUTH attempt: the sink is a local stand-in, not a gatekeeper."""
    return AuthResult(success=True)


class SmtpSink:
    """An SMTP server on ``127.0.0.1`` that stores every message in a :class:`Mailbox`.

    Lifecycle: :meth:`bind` (optional, to learn the port early) -> :meth:`start` -> :meth:`stop`.
    """

    def __init__(self, mailbox: Mailbox, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.mailbox = mailbox
        self._host = host
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def bind(self) -> int:
        """Bind the listening socket now (idempotent) and answer the port."""
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self._host, self._requested_port))
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return int(self._sock.getsockname()[1])

    @property
    def host(self) -> str:
        """The interface the sink listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (binds the socket if that has not happened yet)."""
        return self.bind()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        handler = _Handler(self.mailbox)

        def factory() -> SMTP:
            return SMTP(handler, hostname="hitl-devhost", enable_SMTPUTF8=True, auth_require_tls=False,
                        authenticator=_accept_any_login, loop=loop)

        try:
            assert self._sock is not None
            self._server = loop.run_until_complete(loop.create_server(factory, sock=self._sock))
        except BaseException as exc:  # surface bind/listen errors to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def start_sync(self) -> None:
        """Start serving on a background thread; returns once the socket is listening."""
        if self._thread is not None:
            return
        self.bind()
        self._thread = threading.Thread(target=self._serve, name="hitl-devhost-smtp", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"SMTP sink could not start: {self._error}") from self._error
        log.info("SMTP sink listening on %s:%d", self._host, self.port)

    def stop_sync(self) -> None:
        """Stop the server thread (idempotent); closes the listening socket."""
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._thread = None
        self._loop = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def start(self) -> None:
        """Async wrapper of :meth:`start_sync` (does not block the caller's loop)."""
        await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        """Async wrapper of :meth:`stop_sync`."""
        await asyncio.to_thread(self.stop_sync)
