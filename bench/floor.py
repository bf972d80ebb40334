"""The floor: the least work any human-in-the-loop service must do per start -> decision cycle.

A plain aiohttp server on a loopback port that answers the same two calls as hitl's HTTP API,
with the same request and answer shapes the load clients of :mod:`bench.http_load` use, and
does only what no HITL service can skip:

* **start** (``POST /api/workflows/{workflow}/sessions``): parse the JSON body, one durable
  SQLite write of the session (one ``INSERT`` in its own transaction; WAL and
  ``synchronous=NORMAL``, the settings of hitl's ``SqliteCheckpointStorage``), then one Event
  Grid publish of one CloudEvent with the real ``azure.eventgrid.aio.EventGridPublisherClient``
  and an ``AzureKeyCredential`` (as ``hitl_core/events/eventgrid.py`` does) to the topic it is
  given — ``bench.http_load`` points it at the running devhost's local topic. Answer 201 with the
  session and its pending request's ``call_id``.
* **decide** (``POST /api/sessions/{session_id}/responses``): one read of the session
  (``SELECT``), one conditional write (``UPDATE ... WHERE session_id = ? AND version = ?``; a lost
  race is a 409), answer 200 with the finished session.
* **notifications** (``--smtp-port``): one SMTP send per start of one short plain-text message
  addressed to the request's reviewers (``--notify-to``, default the two demo reviewers) to the
  same SMTP sink, each sender on a connection it keeps (as hitl's e-mail channel keeps its
  connections between requests; reconnecting is not work a service must do). It runs off
  the response path through a queue drained by ``--mail-concurrency`` senders (default 8, the
  local Event Grid topic's delivery concurrency), like hitl's e-mail, which the topic delivers to
  ``notify_reviewers`` after the start has answered, at most 8 deliveries at a time.

No authorisation beyond reading the dev identity header, no audit trail, no outbox, no schema
validation, no logging per request: anything hitl does beyond this is its cost over the floor.

Run: ``python -m bench.floor --port 8123 --db /tmp/floor.db --topic-endpoint URL --topic-key KEY
[--smtp-port 2525]`` (``bench.http_load`` starts it itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.serve import serve_until_signalled

#: The demo directory's two members of the ``reviewers`` role (devhost/demo-directory.json).
REVIEWERS = ("rita@example.com", "ron@example.com")
EVENT_TYPE = "bench.floor.session.started"  # no subscriber of the local topic acts on this type

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    doc        TEXT NOT NULL
) WITHOUT ROWID;
"""


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


class Floor:
    def __init__(self, db: Path, topic_endpoint: str, topic_key: str, smtp_port: int | None,
                 notify_to: tuple[str, ...], mail_concurrency: int = 8) -> None:
        self.db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # as SqliteCheckpointStorage's default
        self.db.executescript(_SCHEMA)
        self.topic_endpoint = topic_endpoint
        self.topic_key = topic_key
        self.smtp_port = smtp_port
        self.notify_to = notify_to
        self.publisher: Any = None
        self.mail_concurrency = mail_concurrency
        self.mail_queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.senders: list[asyncio.Task[None]] = []
        self.sending = 0
        self.mails_sent = 0
        self.mails_failed = 0

    async def open(self) -> None:
        from azure.core.credentials import AzureKeyCredential
        from azure.eventgrid.aio import EventGridPublisherClient

        self.publisher = EventGridPublisherClient(self.topic_endpoint, AzureKeyCredential(self.topic_key))
        if self.smtp_port:
            self.senders = [asyncio.create_task(self.sender()) for _ in range(self.mail_concurrency)]

    async def close(self) -> None:
        await self.mail_queue.join()
        for task in self.senders:
            task.cancel()
        await asyncio.gather(*self.senders, return_exceptions=True)
        if self.publisher is not None:
            await self.publisher.close()
        self.db.close()

    async def start(self, request: web.Request) -> web.Response:
        workflow = request.match_info["workflow"]
        body = json.loads(await request.read())
        session_id = body.get("session_id") or str(uuid.uuid4())
        call_id = uuid.uuid4().hex
        user = request.headers.get("X-HITL-User")
        session = {"session_id": session_id, "workflow": workflow, "status": "pending", "input": body.get("input"),
                   "started_by": user, "pending_requests": [{"call_id": call_id, "approvers": ["role:reviewers"]}]}
        try:
            self.db.execute("INSERT INTO sessions(session_id, version, doc) VALUES (?, 1, ?)",
                            (session_id, json.dumps(session)))
        except sqlite3.IntegrityError:
            return _json(409, {"title": "Session conflict", "session_id": session_id})
        from azure.core.messaging import CloudEvent

        await self.publisher.send([CloudEvent(source="/bench/floor", type=EVENT_TYPE, subject=session_id,
                                              data={"session_id": session_id, "call_id": call_id})])
        if self.smtp_port:
            self.mail_queue.put_nowait((session_id, call_id))
        return _json(201, session)

    async def decide(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        body = json.loads(await request.read())
        row = self.db.execute("SELECT version, doc FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            return _json(404, {"title": "Session not found", "session_id": session_id})
        version, doc = row
        session = json.loads(doc)
        pending = session["pending_requests"]
        if not pending or pending[0]["call_id"] != body.get("call_id"):
            return _json(409, {"title": "Request not pending", "call_id": body.get("call_id")})
        session["status"] = "completed"
        session["pending_requests"] = []
        session["decisions"] = [{"call_id": body["call_id"], "result": body.get("result"),
                                 "decided_by": request.headers.get("X-HITL-User")}]
        cur = self.db.execute("UPDATE sessions SET version = ?, doc = ? WHERE session_id = ? AND version = ?",
                              (version + 1, json.dumps(session), session_id, version))
        if cur.rowcount != 1:
            return _json(409, {"title": "Session conflict", "session_id": session_id})
        return _json(200, session)

    async def sender(self) -> None:
        import aiosmtplib

        smtp: aiosmtplib.SMTP | None = None
        try:
            while True:
                session_id, call_id = await self.mail_queue.get()
                self.sending += 1
                try:
                    if smtp is None or not smtp.is_connected:
                        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port, start_tls=False,
                                               use_tls=False, timeout=10)
                        await smtp.connect()
                    await smtp.send_message(self.message(session_id, call_id))
                    self.mails_sent += 1
                except Exception:  # counted, never raised: the load goes on (on a new connection)
                    self.mails_failed += 1
                    if smtp is not None:
                        smtp.close()
                    smtp = None
                finally:
                    self.sending -= 1
                    self.mail_queue.task_done()
        finally:
            if smtp is not None:
                smtp.close()

    def message(self, session_id: str, call_id: str) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = f"Review requested: {session_id}"
        message["From"] = "floor@hitl.localhost"
        message["To"] = ", ".join(self.notify_to)
        message.set_content(f"Session {session_id} waits for a decision on {call_id}.")
        return message

    async def health(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok", "mails_sent": self.mails_sent, "mails_failed": self.mails_failed,
                           "mails_in_flight": self.mail_queue.qsize() + self.sending})


async def serve(args: argparse.Namespace) -> None:
    floor = Floor(args.db, args.topic_endpoint, args.topic_key, args.smtp_port,
                  tuple(a for a in args.notify_to.split(",") if a), args.mail_concurrency)
    await floor.open()
    app = web.Application()
    app.router.add_post("/api/workflows/{workflow}/sessions", floor.start)
    app.router.add_post("/api/sessions/{session_id}/responses", floor.decide)
    app.router.add_get("/api/health", floor.health)
    await serve_until_signalled(app, args.port)
    await floor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--topic-endpoint", required=True, help="Event Grid topic endpoint (the devhost's local one)")
    parser.add_argument("--topic-key", default=None, help="the topic key (default: read from --topic-key-file)")
    parser.add_argument("--topic-key-file", type=Path, default=None)
    parser.add_argument("--smtp-port", type=int, default=None, help="send one e-mail per start to this SMTP sink")
    parser.add_argument("--notify-to", default=",".join(REVIEWERS))
    parser.add_argument("--mail-concurrency", type=int, default=8,
                        help="concurrent SMTP sends (default 8: the local topic's delivery concurrency)")
    args = parser.parse_args()
    if args.topic_key is None:
        if args.topic_key_file is None:
            parser.error("--topic-key or --topic-key-file is required")
        args.topic_key = args.topic_key_file.read_text().strip()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
