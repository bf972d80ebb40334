"""Event Grid triggers and the outbox sweep.

- ``notify_reviewers`` consumes hitl.request.created / reminder / escalated and notifies people
  through the configured channels (webhook, e-mail), de-duplicated by event id.
- ``track_deadlines`` starts the deadline orchestration of a request that has a deadline or an
  escalation chain (from the chain's next step), and ends it when the request is resolved,
  expired or cancelled.
- ``sweep_outbox`` (timer, every minute) republishes events left in outboxes by a process that
  died between its write and its publish, and finishes continuations whose process died.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from ..events.models import DEADLINE_TRACKED, REQUEST_EVENT_TYPES, EventType, tracks_deadline
from ..settings import notification_channels_configured
from .durable import ORCHESTRATOR_NAME, deadline_input
from .runtime import get_runtime

logger = logging.getLogger("hitl_core.functions")

bp = df.Blueprint()

# The trigger parameters are annotated with this one class, never ``EventGridEvent | CloudEvent``:
# the Python worker refuses a union on a binding parameter (the app would load with no functions).
# The annotation does not choose the shape: the worker's Event Grid converter reads the payload and
# answers ``func.CloudEvent`` for a CloudEvents 1.0 delivery (our topic's input schema) and
# ``func.EventGridEvent`` for the Event Grid schema, so ``cloud_event`` accepts both.
TriggerEvent = func.EventGridEvent


def cloud_event(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The CloudEvent as the service published it, from either binding shape.

    A topic with the CloudEvents 1.0 input schema delivers ``func.CloudEvent``; the Event Grid
    schema delivers ``func.EventGridEvent``. Both are accepted.
    """
    if isinstance(event, func.CloudEvent):
        return {"id": event.id, "type": event.type, "source": event.source, "subject": event.subject,
                "time": event.time.isoformat() if event.time else None, "data": event.get_json()}
    return {
        "id": event.id,
        "type": event.event_type,
        "source": event.topic,
        "subject": event.subject,
        "time": event.event_time.isoformat() if event.event_time else None,
        "data": event.get_json(),
    }


def _dispatcher() -> Any:
    """The runtime's notification dispatcher, built on first use (closed by ``close_runtime``)."""
    rt = get_runtime()
    if rt.dispatcher is None:
        from ..notify.dedup import RedisDedupStore, SqliteDedupStore
        from ..notify.dispatcher import NotificationDispatcher

        settings = rt.settings
        dedup: Any
        if settings.storage == "redis" and settings.redis_url:
            dedup = RedisDedupStore(settings.redis_url)
        else:
            dedup = SqliteDedupStore(settings.data_dir / "notifications.db")
        rt.dispatcher = NotificationDispatcher.from_settings(settings, dedup,
                                                             lease_seconds=settings.notify_claim_lease_seconds,
                                                             recipients=rt.service.notification_recipients)
    return rt.dispatcher


def deadline_instance_id(session_id: str, call_id: str) -> str:
    """One orchestration per request, named from the session and call ids."""
    digest = hashlib.sha256(f"{session_id}\x1f{call_id}".encode()).hexdigest()[:32]
    return f"hitl-deadline-{digest}"


#: What each Event Grid trigger function's subscription delivers to it, in the shape of the subscription's
#: ``filter`` property: infra/modules/eventgrid-subscription.bicep sets exactly these (tests/infra checks the
#: two agree), and the local host honours them (``app.eventgrid_subscriptions``), so no function is woken
#: for an event it ignores. ``track_deadlines`` only gets events whose request a deadline orchestration
#: watches (an advanced filter on ``data.deadline_tracked``): most requests have no deadline, and each
#: event it was woken for only to return would be an execution billed in Azure.
SUBSCRIPTIONS: dict[str, dict[str, Any]] = {
    "notify_reviewers": {
        "includedEventTypes": [EventType.REQUEST_CREATED, EventType.REQUEST_REMINDER, EventType.REQUEST_ESCALATED],
    },
    "track_deadlines": {
        "includedEventTypes": [EventType.REQUEST_CREATED, EventType.REQUEST_RESOLVED, EventType.REQUEST_EXPIRED],
        "advancedFilters": [{"operatorType": "BoolEquals", "key": f"data.{DEADLINE_TRACKED}", "value": True}],
    },
}


def deployed_subscriptions(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any] | None]:
    """:data:`SUBSCRIPTIONS` as a deployment with these settings has them (``env``, default the process's).

    Without a notification channel (``HITL_WEBHOOK_URL``, ``HITL_SMTP_HOST``) the Bicep makes no
    ``notify_reviewers`` subscription (None here): nothing would be sent, and each request created
    would wake an execution, billed in Azure, only to be ignored. The local host reads this as the
    app's ``eventgrid_subscriptions`` and delivers the same way.
    """
    channels = notification_channels_configured(os.environ if env is None else env)
    return {name: (declared if channels or name != "notify_reviewers" else None)
            for name, declared in SUBSCRIPTIONS.items()}


@bp.event_grid_trigger(arg_name="event")
async def notify_reviewers(event: TriggerEvent) -> None:
    envelope = cloud_event(event)
    if envelope["type"] not in REQUEST_EVENT_TYPES:
        return
    from ..notify.models import InvalidEventError

    try:
        result = await _dispatcher().handle(envelope)
    except InvalidEventError as exc:  # redelivery cannot fix a malformed event: log it, let it go
        logger.error("notification event %s is malformed: %s", envelope["id"], exc)
        return
    status = getattr(result, "status", result)
    # an ignored event (no channel configured) is every event of a deployment without notifications:
    # not worth a log line each (in Azure every line is shipped to Application Insights)
    logger.log(logging.DEBUG if status == "ignored" else logging.INFO, "notification for %s: %s",
               envelope["id"], status)


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def track_deadlines(event: TriggerEvent, client: df.DurableOrchestrationClient) -> None:
    envelope = cloud_event(event)
    event_type = envelope["type"]
    data = envelope["data"] or {}
    session_id, call_id = data.get("session_id"), data.get("call_id")
    if not session_id or not call_id:
        return
    if not tracks_deadline(data):
        return  # no deadline, no chain (the subscription's filter keeps these away; older events lack the flag)
    instance_id = deadline_instance_id(session_id, call_id)
    chained = bool((data.get("approval") or {}).get("escalation"))
    if event_type == EventType.REQUEST_CREATED:
        status = await client.get_status(instance_id)
        if status is not None and getattr(status, "runtime_status", None) is not None:
            return  # already tracked (Event Grid redelivered the event)
        runtime = get_runtime()
        # A declared chain may begin before its deadline (a reminder step): start from its first step.
        plan = await runtime.service.escalations.plan(session_id, call_id) if chained else None
        deadline = data.get("deadline") or (plan.at.isoformat() if plan else None)
        if deadline is None:
            return  # decided already, or nothing in the chain is left to wait for
        await client.start_new(ORCHESTRATOR_NAME, instance_id, deadline_input(
            session_id, call_id, deadline, runtime.settings,
            step=plan.index if plan else None, at=plan.at.isoformat() if plan else None))
    elif event_type in (EventType.REQUEST_RESOLVED, EventType.REQUEST_EXPIRED) and data.get("deadline"):
        status = await client.get_status(instance_id)
        state = getattr(getattr(status, "runtime_status", None), "value", None)
        if state in ("Running", "Pending"):
            await client.raise_event(instance_id, "decided", {"event": event_type})


@bp.timer_trigger(schedule="0 */1 * * * *", arg_name="timer", run_on_startup=False)
async def sweep_outbox(timer: func.TimerRequest) -> None:
    report = await get_runtime().service.sweep()
    if report["published"] or report["recovered"]:
        logger.info("outbox sweep: %s", report)
