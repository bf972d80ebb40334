"""A small Functions app the devhost tests run: HTTP echo, a real Event Grid publisher, an Event
Grid trigger that fails on demand, a timer. Nothing here knows about the devhost.

``SAMPLE_RECORD_DIR`` (env) is where the trigger functions write what they saw, so a test (or a
subprocess) can read it back from disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import azure.functions as func
from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid.aio import EventGridPublisherClient

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
_lock = threading.Lock()


def _record_dir() -> Path | None:
    value = os.environ.get("SAMPLE_RECORD_DIR")
    return Path(value) if value else None


def _append(name: str, record: dict[str, object]) -> None:
    folder = _record_dir()
    if folder is None:
        return
    with _lock, (folder / name).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


@app.route(route="items/{id:int}/{name?}", methods=["GET", "POST"])
def echo(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Sync function: echoes what the host handed over."""
    body = {
        "method": req.method,
        "url": req.url,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "x_custom": req.headers.get("x-custom"),
        "body": req.get_body().decode("utf-8"),
        "function": context.function_name,
    }
    return func.HttpResponse(json.dumps(body), status_code=201 if req.method == "POST" else 200,
                             mimetype="application/json", headers={"X-Echo": "yes"})


@app.route(route="hello", methods=["GET"])
async def hello(req: func.HttpRequest) -> str:
    """Async function returning a plain string."""
    return f"hello {req.params.get('who', 'world')}"


@app.route(route="files/{*path}", methods=["GET"])
async def files(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params.get("path", ""), status_code=200)


@app.route(route="slow", methods=["GET"])
async def slow(req: func.HttpRequest) -> func.HttpResponse:
    """Takes ``?s=`` seconds: lets a test stop the host while a request is in flight."""
    await asyncio.sleep(float(req.params.get("s", "1")))
    return func.HttpResponse("done")


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom")


@app.route(route="publish", methods=["POST"])
async def publish(req: func.HttpRequest) -> func.HttpResponse:
    """Publishes one CloudEvent with the real Event Grid client to HITL_EVENTGRID_TOPIC_ENDPOINT."""
    spec = req.get_json()
    event = CloudEvent(source="/sample", type=spec["type"], subject=spec.get("subject"), data=spec.get("data"))
    client = EventGridPublisherClient(os.environ["HITL_EVENTGRID_TOPIC_ENDPOINT"],
                                      AzureKeyCredential(os.environ["HITL_EVENTGRID_TOPIC_KEY"]))
    async with client:
        await client.send([event])
    return func.HttpResponse(json.dumps({"id": event.id}), mimetype="application/json")


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.CloudEvent) -> None:
    """Records each delivery attempt; fails the first ``data.fail_times`` attempts of an event."""
    data = event.get_json() or {}
    folder = _record_dir()
    attempts = 1
    if folder is not None:
        with _lock:
            counter = folder / f"attempts-{event.id}"
            attempts = int(counter.read_text()) + 1 if counter.exists() else 1
            counter.write_text(str(attempts))
    if isinstance(data, dict) and attempts <= int(data.get("fail_times", 0)):
        raise RuntimeError(f"failing attempt {attempts} on purpose")
    _append("events.jsonl", {"id": event.id, "type": event.type, "subject": event.subject, "data": data,
                             "source": event.source, "class": type(event).__name__, "attempt": attempts,
                             "time": str(getattr(event, "time", None))})


@app.timer_trigger(schedule="*/1 * * * * *", arg_name="timer", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    _append("ticks.jsonl", {"past_due": timer.past_due})
