"""A stand-in mail relay in a process of its own: accepts every message, counts it, keeps nothing else.

For :mod:`bench.http_load` with ``--notify``: in Azure the app hands its e-mail to an outside
relay, so the relay's work (the SMTP server side, parsing, storing) must not land in the measured
process. The local host's own SMTP sink runs inside the host's process and parses every message
for ``GET /api/_dev/mailbox``; pointed at it, hitl would pay for the relay while the floor (another
process) would not. Both servers therefore send to this sink, which counts messages and bytes per
envelope sender and answers ``GET /stats`` — the same kind of stand-in as :mod:`bench.topic_sink`.

Run: ``python -m bench.mail_sink --smtp-port 2525 --port 8125``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.serve import serve_until_signalled


class CountingHandler:
    """Accepts every message; counts it per ``MAIL FROM``."""

    def __init__(self) -> None:
        self.by_sender: Counter[str] = Counter()
        self.bytes = 0
        self.connections = 0

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.by_sender[str(envelope.mail_from or "")] += 1
        self.bytes += len(envelope.content or b"")
        return "250 Message accepted for delivery"

    def stats(self) -> dict[str, Any]:
        return {"total": sum(self.by_sender.values()), "by_sender": dict(self.by_sender), "bytes": self.bytes,
                "connections": self.connections}


async def serve(port: int, smtp_port: int) -> None:
    handler = CountingHandler()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SMTP(handler, hostname="bench-mail-sink", enable_SMTPUTF8=True),
                                    host="127.0.0.1", port=smtp_port)

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(handler.stats())

    app = web.Application()
    app.router.add_get("/stats", get_stats)
    try:
        await serve_until_signalled(app, port)
    finally:
        smtp.close()
        smtp.close_clients()  # a sender may keep its connection for the next message; do not wait for it
        await smtp.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="HTTP port of GET /stats")
    parser.add_argument("--smtp-port", type=int, required=True)
    ns = parser.parse_args()
    asyncio.run(serve(ns.port, ns.smtp_port))


if __name__ == "__main__":
    main()
