"""A stand-in Event Grid topic that accepts every publish and does nothing else.

For :mod:`bench.app_cost`: the app publishes with the real ``EventGridPublisherClient`` (its CPU
is part of what runs in Azure), and the topic's own work must not land in the measured process,
so the sink runs as a separate process. It checks the ``aeg-sas-key`` header, counts events and
bytes, and answers 200 with an empty body, as Event Grid does. It also counts the deliveries Azure
would make: each event against each subscription filter the app declares
(``hitl_core.functions.events.SUBSCRIPTIONS``, what the Bicep deploys for an app with a notification
channel; without one there is no ``notify_reviewers`` subscription and its count is 0), evaluated as
the local host evaluates them (:mod:`devhost.eventgrid_filters`) — each delivery is one billed execution.

Run: ``python -m bench.topic_sink --port 8124 --key KEY`` (``GET /stats`` answers the counts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import web

from bench.serve import serve_until_signalled
from devhost.eventgrid_filters import deliveries, parse_filters


async def serve(port: int, key: str) -> None:
    from hitl_core.functions.events import SUBSCRIPTIONS

    filters = parse_filters(SUBSCRIPTIONS)
    stats: dict[str, Any] = {"publishes": 0, "events": 0, "bytes": 0, "refused": 0,
                             "deliveries": dict.fromkeys(SUBSCRIPTIONS, 0)}

    async def publish(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("aeg-sas-key") != key:
            stats["refused"] += 1
            return web.Response(status=401)
        payload = json.loads(body)
        stats["publishes"] += 1
        events = payload if isinstance(payload, list) else [payload]
        stats["events"] += len(events)
        for _, function in deliveries(events, list(SUBSCRIPTIONS), filters):
            stats["deliveries"][function] += 1
        stats["bytes"] += len(body)
        return web.Response(status=200)

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_post("/runtime/eventgrid/topics/{topic}/api/events", publish)
    app.router.add_get("/stats", get_stats)
    await serve_until_signalled(app, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    ns = parser.parse_args()
    asyncio.run(serve(ns.port, ns.key))


if __name__ == "__main__":
    main()
