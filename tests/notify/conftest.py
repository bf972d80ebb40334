"""Real loopback servers for the notification tests.

* :class:`WebhookReceiver`: an aiohttp server that verifies every request's signature with the
  public :func:`verify_signature` and can be scripted to answer 503/429/400 or to stall.
* :class:`SmtpServer`: an aiosmtpd server (optionally with AUTH and STARTTLS using a self-signed
  certificate generated here with ``cryptography``) that keeps every message it accepts.
* Redis: one real ``redis-server`` from ``tests/support/redis_server.py``, with a password.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from hitl_core.notify import CloudEvent, Notification, render_notification, verify_signature
from hitl_core.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.support.redis_server import RedisServer, free_port, redis_server

WEBHOOK_SECRET = "whsec-test-0123456789"
SMTP_USER = "hitl-mailer"
SMTP_PASSWORD = "pa55-w0rd-never-logged"
BASE = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def make_event(
    *,
    event_id: str = "evt-1",
    event_type: str = "hitl.request.created",
    data: dict[str, Any] | None = None,
    **request: Any,
) -> dict[str, Any]:
    """A CloudEvent dict as the service publishes it for a pending request."""
    view: dict[str, Any] = {
        "call_id": "call-1",
        "session_id": "sess-42",
        "workflow": "content-review",
        "executor_id": "reviewer",
        "request_type": "ReviewRequest",
        "data": data
        if data is not None
        else {"title": "Publish the Q1 launch post", "draft": "Hello world", "meta": {"words": 2, "tags": ["a"]}},
        "response_schema": {
            "type": "object",
            "properties": {
                "approved": {"type": "boolean", "description": "Publish it?"},
                "comment": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            },
            "required": ["approved"],
        },
        "created_at": BASE.isoformat(),
        "deadline": (BASE + dt.timedelta(days=2)).isoformat(),
        "approvers": ["alice@example.com", "editors"],
        "status": "pending",
        "decide_url": "https://hitl.example.com/decide?token=abc",
    }
    view.update(request)
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": event_type,
        "source": f"/workflows/{view['workflow']}",
        "subject": f"sessions/{view['session_id']}/requests/{view['call_id']}",
        "time": BASE.isoformat(),
        "data": view,
    }


def personal_notes(event: CloudEvent, *people: str) -> list[Notification]:
    """The event rendered once per person, each addressed to that person alone (as e-mail sends it)."""
    return [render_notification(event, now=BASE).model_copy(update={"recipients": [p]}) for p in people]


# --------------------------------------------------------------------------- webhook receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float
    path_qs: str


@dataclass
class WebhookReceiver:
    """Records requests; answers the scripted responses first, then ``default_status``."""

    secret: str = WEBHOOK_SECRET
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], float]] = field(default_factory=list)
    default_status: int = 200
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def respond(self, status: int, times: int = 1, *, headers: dict[str, str] | None = None, delay: float = 0) -> None:
        self.script.extend([(status, headers or {}, delay)] * times)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify_signature(
            self.secret, request.headers.get(TIMESTAMP_HEADER), body, request.headers.get(SIGNATURE_HEADER)
        )
        self.requests.append(Received(dict(request.headers), body, ok, time.monotonic(), request.path_qs))
        status, headers, delay = self.script.pop(0) if self.script else (self.default_status, {}, 0.0)
        if delay:
            await asyncio.sleep(delay)
        if not ok:
            return web.json_response({"error": "bad signature"}, status=401)
        return web.json_response({"status": status}, status=status, headers=headers)


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    yield receiver
    await runner.cleanup()


# --------------------------------------------------------------------------- SMTP server


@dataclass
class SmtpServer:
    port: int
    messages: list[tuple[Any, EmailMessage]]
    auth_attempts: list[tuple[str, bytes]]
    lock: threading.Lock
    #: the SMTP session (one per connection) each message arrived on, in order
    sessions: list[int] = field(default_factory=list)
    #: stops the server (and drops its connections); the fixture stops it at the end anyway
    stop: Callable[[], None] = lambda: None

    def received(self) -> list[EmailMessage]:
        with self.lock:
            return [message for _, message in self.messages]

    def envelopes(self) -> list[Any]:
        with self.lock:
            return [envelope for envelope, _ in self.messages]


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        with self.server.lock:
            self.server.messages.append((envelope, message))
            self.server.sessions.append(id(session))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost, made now (nothing is checked in)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hitl-test-smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def client_tls_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts exactly the test certificate (hostname checked)."""
    return ssl.create_default_context(cafile=str(tls_files[0]))


@pytest.fixture
def smtp_factory(tls_files: tuple[Path, Path]) -> Iterator[Callable[..., SmtpServer]]:
    """Start aiosmtpd servers: ``smtp_factory(auth=True, starttls=True)``; stopped afterwards.

    ``idle_timeout``: seconds the server lets a connection idle before it says 421 and closes it;
    ``port``: listen there (to start a new server where a stopped one was).
    """
    controllers: list[Controller] = []

    def start(*, auth: bool = False, starttls: bool = False, idle_timeout: float = 300,
              port: int | None = None) -> SmtpServer:
        server = SmtpServer(port=0, messages=[], auth_attempts=[], lock=threading.Lock())

        def authenticator(_server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> AuthResult:
            if not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            with server.lock:
                server.auth_attempts.append((mechanism, data.login))
            return AuthResult(
                success=data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode(), handled=False
            )

        options: dict[str, Any] = {}
        if auth:
            options.update(authenticator=authenticator, auth_required=True, auth_require_tls=starttls)
        if starttls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls_files[0]), str(tls_files[1]))
            options.update(tls_context=context, require_starttls=True)
        for _ in range(3):
            chosen = port or free_port()
            controller = Controller(_Handler(server), hostname="127.0.0.1", port=chosen, timeout=idle_timeout,
                                    **options)
            try:
                controller.start()
            except Exception:  # port taken between free_port() and bind: try another
                if port:
                    raise
                continue
            server.port = chosen
            server.stop = controller.stop
            controllers.append(controller)
            return server
        raise RuntimeError("could not start aiosmtpd on a free port")

    yield start
    for controller in controllers:
        if not controller.loop.is_closed():  # not stopped by its test already
            controller.stop()


@pytest.fixture
def smtp_server(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    """A plain SMTP server: no TLS, no AUTH."""
    return smtp_factory()


# --------------------------------------------------------------------------- redis


@pytest.fixture(scope="session")
def notify_redis() -> Iterator[RedisServer]:
    with redis_server(password="redis-pw-notify") as server:
        yield server
