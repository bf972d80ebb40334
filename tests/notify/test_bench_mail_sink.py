"""The benchmark's stand-in relay (``bench/mail_sink.py``) counts what hitl's e-mail channel sends.

``python -m bench.http_load --notify`` reads its figures from it (hitl's and the floor's e-mails
apart), so it is checked here against the real channel over a real connection: the messages of
one request arrive on one connection, counted per envelope sender.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hitl_core.notify import CloudEvent, EmailChannel
from tests.support.ports import free_port

from .conftest import make_event, personal_notes

ROOT = Path(__file__).resolve().parents[2]


def test_the_stand_in_relay_counts_each_message_per_sender() -> None:
    port, smtp_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.mail_sink", "--port", str(port),
                             "--smtp-port", str(smtp_port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1).json()["total"] == 0
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "the mail sink did not start"
                time.sleep(0.1)
        event = CloudEvent.coerce(make_event())
        notes = personal_notes(event, "rita@example.com", "ron@example.com")
        channel = EmailChannel("127.0.0.1", smtp_port, starttls=False, sender="hitl@hitl.localhost")

        async def send_and_close() -> None:
            await channel.send_all(event, notes)
            await channel.aclose()

        asyncio.run(send_and_close())
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
        assert stats["by_sender"] == {"hitl@hitl.localhost": 2} and stats["connections"] == 1
        assert stats["bytes"] > 1000
    finally:
        proc.terminate()
        proc.wait(timeout=10)
