"""``python -m devhost`` as a user runs it: banner, env defaults, a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def _read_banner(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("devhost ready on "):
            return "".join(lines)
    raise AssertionError("no ready line; got:\n" + "".join(lines))


def test_the_cli_serves_the_app_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    data, records = tmp_path / "data", tmp_path / "records"
    records.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    env["SAMPLE_RECORD_DIR"] = str(records)
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--app", "tests.devhost.sample_app:app",
             "--port", "0", "--data-dir", str(data)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            banner = _read_banner(proc, time.monotonic() + 30)
            base = re.search(r"devhost ready on (http://127\.0\.0\.1:\d+)", banner)
            assert base is not None
            url = base.group(1)
            assert f"API            {url}/api" in banner
            assert f"{url}/api/_dev/mailbox" in banner
            assert f"{url}/runtime/eventgrid/topics/local/api/events" in banner
            assert "curl " in banner
            assert "GET,POST     " + url + "/api/items/{id:int}/{name?}  (echo)" in banner
            smtp = re.search(r"SMTP sink 127\.0\.0\.1:(\d+)", banner)
            assert smtp is not None

            with httpx.Client(base_url=url, timeout=10) as http:
                assert http.get("/api/items/3").json()["route_params"] == {"id": "3"}
                # the app found HITL_EVENTGRID_TOPIC_ENDPOINT/KEY in its environment at import time
                published = http.post("/api/publish", json={"type": "cli.test", "subject": "s", "data": {"k": 1}})
                assert published.status_code == 200, published.text
                deadline = time.monotonic() + 10
                events = records / "events.jsonl"
                # the app opens the file before it writes the line: wait for a whole line
                while not (events.exists() and events.read_text().endswith("\n")):
                    assert time.monotonic() < deadline, "the event was not delivered"
                    time.sleep(0.05)
                assert json.loads(events.read_text())["id"] == published.json()["id"]

                msg = EmailMessage()
                msg["From"], msg["To"], msg["Subject"] = "a@localhost", "b@localhost", "cli mail"
                msg.set_content("hi")
                with smtplib.SMTP("127.0.0.1", int(smtp.group(1)), timeout=10) as client:
                    client.send_message(msg)
                assert http.get("/api/_dev/mailbox").json()["messages"][-1]["subject"] == "cli mail"
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            rest = proc.stdout.read() if proc.stdout else ""
            if proc.stdout:
                proc.stdout.close()
    assert code == 0
    logs = stderr_path.read_text()
    assert "devhost stopped" in logs
    key = (data / "eventgrid-topic.key").read_text().strip()
    assert key and key not in banner + rest + logs  # the topic key is never printed or logged
    assert (data / "mailbox.jsonl").exists()
    assert (data / "eventgrid.db").exists()


def test_no_access_log_leaves_out_the_line_per_request_and_nothing_else(tmp_path: Path) -> None:
    """``--no-access-log`` (the benchmarks' setting) drops only the per-request lines; without it each
    request is logged, its query (decision links carry tokens there) left out."""
    from tests.e2e.host import LocalHost

    logs = {}
    for name, options in (("quiet", ("--no-access-log",)), ("default", ())):
        host = LocalHost(tmp_path / name, options=options)
        host.start()
        try:
            assert httpx.get(f"{host.base}/api/health?token=secret", timeout=10).status_code == 200
        finally:
            host.stop()
        logs[name] = host.log()
    assert "GET /api/health -> 200" in logs["default"] and "secret" not in logs["default"]
    assert "GET /api/health" not in logs["quiet"]
    assert "Loaded by the Azure Functions worker" in logs["quiet"]  # the banner and other logs remain
