"""No configured secret appears in logs, problem bodies, checkpoints, events or mails.

The host runs with every secret setting filled with a recognisable value, goes through a full
flow plus error paths (bad decisions, forged links, an unreachable webhook whose URL carries a
token), and then every byte it wrote — its log, the SQLite stores (checkpoints, audit, the
event queue, notification de-dup), the mailbox — and every HTTP answer is searched for them.
Key files (``*.key``) are the one place a key is meant to be, and are skipped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from .host import LocalHost, free_port, wait_for

SECRETS = {
    "HITL_SMTP_USERNAME": "smtp-user-5f1c",
    "HITL_SMTP_PASSWORD": "smtp-pass-S3cr3t-9a7e",
    "HITL_WEBHOOK_SECRET": "webhook-hmac-S3cr3t-44d2",
    "HITL_LINK_SIGNING_KEYS": "link-key-S3cr3t-one,link-key-S3cr3t-two",
    "HITL_EVENTGRID_TOPIC_KEY": "topic-key-S3cr3t-77b0",
}
WEBHOOK_TOKEN = "webhook-url-token-S3cr3t-0c3d"


def needles() -> list[str]:
    values = [v for k, v in SECRETS.items() if k != "HITL_LINK_SIGNING_KEYS"]
    values += SECRETS["HITL_LINK_SIGNING_KEYS"].split(",")
    return [*values, WEBHOOK_TOKEN]


def sqlite_text(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        chunks = []
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                chunks.append(" ".join(str(v) for v in row))
        return "\n".join(chunks)
    finally:
        db.close()


def test_secrets_never_leave_the_settings(tmp_path: Path) -> None:
    dead_webhook = f"http://127.0.0.1:{free_port()}/hook?token={WEBHOOK_TOKEN}"
    host = LocalHost(tmp_path / "data", {**SECRETS, "HITL_WEBHOOK_URL": dead_webhook,
                                         "HITL_NOTIFY_DEFAULT_RECIPIENTS": "ops@example.test"})
    host.start()
    answers: list[str] = []
    try:
        with host.client() as client:
            def keep(response: httpx.Response) -> httpx.Response:
                answers.append(response.text + str(dict(response.headers)))
                return response

            view = keep(client.post("/api/workflows/content-review/sessions",
                                    json={"session_id": "leak-1", "input": {"draft": "confidential plan"}})).json()
            call_id = view["pending_requests"][0]["call_id"]
            wait_for(lambda: host.mailbox())
            keep(client.post("/api/sessions/leak-1/responses", json={"call_id": "nope", "result": {}}))
            keep(client.post("/api/sessions/leak-1/responses", json={"call_id": call_id, "result": {"approved": 3}}))
            keep(client.post("/api/decide", data={"token": "forged.token", "decision": "approve"}))
            keep(client.get("/api/decide", params={"token": "x.y"}))
            keep(client.post("/api/sessions/leak-1/responses", json={"call_id": call_id,
                                                                       "result": {"approved": True}}))
            keep(client.get("/api/sessions/leak-1/audit"))
            keep(client.get("/api/health"))
            keep(client.get("/api/openapi.json"))
            mails = host.mailbox()
            assert mails, "the flow must have produced mail"
    finally:
        assert host.stop() == 0
    written = [host.log()]
    for path in host.data_dir.rglob("*"):
        if not path.is_file() or path.suffix == ".key" or path.name.endswith((".db-wal", ".db-shm")):
            continue
        written.append(sqlite_text(path) if path.suffix == ".db" else path.read_text(errors="replace"))
    haystacks = {"HTTP answers": "\n".join(answers), "mail": str(mails), "files and stores": "\n".join(written)}
    assert "webhook" in host.log().lower()  # the failing webhook was attempted and logged
    for where, text in haystacks.items():
        for secret in needles():
            assert secret not in text, f"{secret!r} leaked into {where}"
