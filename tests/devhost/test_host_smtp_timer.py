"""The SMTP sink behind GET /api/_dev/mailbox, and timer triggers on their NCRONTAB schedule."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import smtplib
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from devhost.server import CronSchedule, DevHost
from tests.devhost import sample_app


def _send(port: int) -> None:
    msg = EmailMessage()
    msg["From"] = "hitl@localhost"
    msg["To"] = "Reviewer <reviewer@example.com>"
    msg["Subject"] = "Review needed: draft ✓"
    msg.set_content("Please review the draft.")
    msg.add_alternative("<p>Please <b>review</b> the draft.</p>", subtype="html")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(msg)


async def test_mail_sent_with_smtplib_shows_up_in_the_mailbox_and_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    host = DevHost(sample_app.app, port=0, data_dir=data, timers=False)
    await host.start()
    try:
        assert host.smtp is not None
        await asyncio.to_thread(_send, host.smtp.port)
        async with httpx.AsyncClient(timeout=10) as http:
            box = (await http.get(host.mailbox_url)).json()
        assert box["count"] == 1
        mail = box["messages"][0]
        assert mail["from"] == "hitl@localhost"
        assert mail["to"] == ["reviewer@example.com"]
        assert mail["subject"] == "Review needed: draft ✓"
        assert mail["text"].strip() == "Please review the draft."
        assert "<b>review</b>" in mail["html"]
        assert mail["headers"]["Subject"] == "Review needed: draft ✓"
        assert mail["envelope"]["rcpt_tos"] == ["reviewer@example.com"]
        lines = (data / "mailbox.jsonl").read_text().splitlines()
        assert json.loads(lines[0])["subject"] == "Review needed: draft ✓"
    finally:
        await host.stop()

    again = DevHost(sample_app.app, port=0, data_dir=data, timers=False)
    await again.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            box = (await http.get(again.mailbox_url, params={"to": "reviewer@example.com"})).json()
            assert [m["subject"] for m in box["messages"]] == ["Review needed: draft ✓"]
            assert (await http.delete(again.mailbox_url)).json() == {"deleted": 1}
            assert (await http.get(again.mailbox_url)).json()["count"] == 0
    finally:
        await again.stop()


async def test_the_timer_fires_on_its_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMPLE_RECORD_DIR", str(tmp_path))
    host = DevHost(sample_app.app, port=0, data_dir=tmp_path / "data", smtp=False)
    await host.start()
    ticks = tmp_path / "ticks.jsonl"
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while not ticks.exists() or len(ticks.read_text().splitlines()) < 2:
            assert asyncio.get_running_loop().time() < deadline, "the 1 s timer did not fire twice in 5 s"
            await asyncio.sleep(0.05)
    finally:
        await host.stop()
    assert json.loads(ticks.read_text().splitlines()[0]) == {"past_due": False}
    count = len(ticks.read_text().splitlines())
    await asyncio.sleep(1.2)
    assert len(ticks.read_text().splitlines()) == count  # stopped means stopped


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("*/1 * * * * *", _utc(2024, 1, 1, 0, 0, 0), _utc(2024, 1, 1, 0, 0, 1)),
    ("*/15 * * * * *", _utc(2024, 1, 1, 0, 0, 14), _utc(2024, 1, 1, 0, 0, 15)),
    ("0 */5 * * * *", _utc(2024, 1, 1, 0, 4, 59), _utc(2024, 1, 1, 0, 5, 0)),
    ("0 0 * * * *", _utc(2024, 1, 1, 0, 0, 0), _utc(2024, 1, 1, 1, 0, 0)),
    ("30 15 9 * * *", _utc(2024, 1, 1, 10, 0, 0), _utc(2024, 1, 2, 9, 15, 30)),
    ("0 0 9 * * MON-FRI", _utc(2024, 1, 5, 10, 0, 0), _utc(2024, 1, 8, 9, 0, 0)),  # Fri -> Mon
    ("0 0 0 1 JAN *", _utc(2024, 3, 1, 0, 0, 0), _utc(2025, 1, 1, 0, 0, 0)),
    ("0 0 12 29 2 *", _utc(2024, 3, 1, 0, 0, 0), _utc(2028, 2, 29, 12, 0, 0)),
    ("5,10 * * * * *", _utc(2024, 1, 1, 0, 0, 5), _utc(2024, 1, 1, 0, 0, 10)),
    ("00:00:30", _utc(2024, 1, 1, 0, 0, 0), _utc(2024, 1, 1, 0, 0, 30)),
])
def test_ncrontab_next_occurrence(expression: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert CronSchedule(expression).next_after(after) == expected


@pytest.mark.parametrize("expression", ["* * * * *", "61 * * * * *", "*/0 * * * * *", "0 0 0 31 2 *"])
def test_bad_schedules_are_rejected(expression: str) -> None:
    with pytest.raises(ValueError):
        CronSchedule(expression).next_after(_utc(2024, 1, 1, 0, 0, 0))
