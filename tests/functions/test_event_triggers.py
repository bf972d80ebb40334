"""The Event Grid trigger functions, called with the binding objects the Functions worker passes.

``notify_reviewers`` receives ``func.CloudEvent`` (a CloudEvents 1.0 topic) or
``func.EventGridEvent`` (Event Grid schema); both reach the real SMTP server once per event id.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import azure.functions as func
import pytest

from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime, reset_runtime
from hitl_core.functions.runtime import close_runtime
from tests.notify.conftest import SmtpServer, smtp_factory, smtp_server, tls_files  # noqa: F401 - fixtures

from .conftest import app_functions


@pytest.fixture
async def mailing_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer):  # type: ignore[no-untyped-def]  # noqa: F811
    for name, value in {"HITL_STORAGE": "sqlite", "HITL_DATA_DIR": str(tmp_path), "HITL_AUTH_MODE": "dev",
                        "HITL_SMTP_HOST": "127.0.0.1", "HITL_SMTP_PORT": str(smtp_server.port),
                        "HITL_SMTP_STARTTLS": "false", "HITL_NOTIFY_DEFAULT_RECIPIENTS": "ops@example.test"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HITL_EVENTGRID_TOPIC_ENDPOINT", raising=False)
    app_functions()
    reset_runtime()
    publisher = InMemoryEventPublisher()
    get_runtime().service.publisher = publisher
    yield publisher, smtp_server
    await close_runtime()


async def created_event(publisher: InMemoryEventPublisher) -> dict:  # type: ignore[type-arg]
    await get_runtime().service.start("content-review", input={"draft": "Quarterly letter"}, session_id="ev-1")
    await get_runtime().service.drain()
    (event,) = [e for e in publisher.events if e["type"] == "hitl.request.created"]
    return event


async def test_cloud_event_binding_notifies_once_per_event_id(mailing_runtime) -> None:  # type: ignore[no-untyped-def]
    publisher, smtp = mailing_runtime
    event = await created_event(publisher)
    binding = func.CloudEvent(id=event["id"], source=event["source"], type=event["type"], specversion="1.0",
                              subject=event["subject"], time=dt.datetime.now(dt.UTC), data=event["data"])
    notify = app_functions()["notify_reviewers"]
    await notify(binding)
    await notify(binding)  # Event Grid delivered it twice
    (mail,) = smtp.received()
    assert "Quarterly letter" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert mail["X-HITL-Event-Id"] == event["id"] and mail["X-HITL-Session"] == "ev-1"


async def test_event_grid_schema_binding_is_understood_too(mailing_runtime) -> None:  # type: ignore[no-untyped-def]
    publisher, smtp = mailing_runtime
    event = await created_event(publisher)
    binding = func.EventGridEvent(id=event["id"], data=event["data"], topic=event["source"], subject=event["subject"],
                                  event_type=event["type"], event_time=dt.datetime.now(dt.UTC), data_version="1.0")
    await app_functions()["notify_reviewers"](binding)
    assert len(smtp.received()) == 1


async def test_other_event_types_notify_nobody(mailing_runtime) -> None:  # type: ignore[no-untyped-def]
    publisher, smtp = mailing_runtime
    event = await created_event(publisher)
    binding = func.CloudEvent(id="other", source=event["source"], type="hitl.session.completed", specversion="1.0",
                              subject="sessions/ev-1", time=None, data={"session_id": "ev-1"})
    await app_functions()["notify_reviewers"](binding)
    assert smtp.received() == []


@pytest.mark.parametrize(("env", "notify_subscribed"), [
    ({}, False),
    ({"HITL_SMTP_HOST": "off", "HITL_WEBHOOK_URL": ""}, False),
    ({"HITL_SMTP_HOST": "OFF"}, False),
    ({"HITL_SMTP_HOST": "smtp.example.com"}, True),
    ({"HITL_WEBHOOK_URL": "https://hooks.example.com/hitl"}, True),
    ({"HITL_SMTP_HOST": "off", "HITL_WEBHOOK_URL": "https://hooks.example.com/hitl"}, True),
])
def test_notify_reviewers_is_subscribed_only_with_a_notification_channel(env: dict[str, str],
                                                                          notify_subscribed: bool) -> None:
    """What the app tells the local host (and the Bicep deploys): without a webhook or an SMTP host,
    notify_reviewers has no subscription; track_deadlines keeps its filter either way."""
    from hitl_core.functions.events import SUBSCRIPTIONS, deployed_subscriptions

    deployed = deployed_subscriptions(env)
    assert deployed["notify_reviewers"] == (SUBSCRIPTIONS["notify_reviewers"] if notify_subscribed else None)
    assert deployed["track_deadlines"] == SUBSCRIPTIONS["track_deadlines"]


def test_the_app_declares_its_subscriptions_from_its_settings_at_import() -> None:
    """function_app.py reads them when the worker (or the local host) imports it, never raising: a
    malformed setting elsewhere must not leave the host with no functions."""
    import os
    import subprocess
    import sys

    probe = ("import function_app, json; print(json.dumps(function_app.app.eventgrid_subscriptions"
             "['notify_reviewers'] is not None))")
    base = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    for extra, expected in (({"HITL_SMTP_HOST": "off"}, "false"), ({"HITL_SMTP_HOST": "smtp.example.com"}, "true"),
                            ({"HITL_SMTP_HOST": "smtp.example.com", "HITL_SMTP_PORT": "not a number"}, "true")):
        done = subprocess.run([sys.executable, "-c", probe], env={**base, **extra}, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2], timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == expected, done.stdout
