"""A local host for ``function_app.app``: run the real Functions app without Core Tools.

Why this exists: Azure Functions Core Tools, Azurite-backed Durable Functions and an Event Grid
simulator are not available on every developer machine (and none of them run here), yet the
service must be exercised end to end over real HTTP. ``python -m devhost`` (what
``make run`` starts) serves the app on ``127.0.0.1`` with embedded stand-ins:

* **HTTP triggers** at ``/{routePrefix}/{route}`` (``routePrefix`` from ``host.json`` beside the
  app module, default ``api``), discovered with ``app.get_functions()``; the devhost never
  re-declares a route. Keys are not required (``authLevel`` is ignored locally).
* **A local Event Grid topic** at ``POST /runtime/eventgrid/topics/{topic}/api/events`` that
  accepts what ``azure.eventgrid.aio.EventGridPublisherClient`` sends for CloudEvents
  (``aeg-sas-key`` header) and delivers every event to every Event Grid trigger function with
  retries and exponential back-off; the queue is persisted so a restart redelivers.
* **Timer triggers** on their NCRONTAB schedule.
* **Durable Functions** through :mod:`devhost.durable` (a local runtime that drives the
  real orchestrator code with the real SDK), when the app declares durable functions.
* **A local SMTP sink** whose messages are listed at ``GET /api/_dev/mailbox`` and appended to
  ``{data_dir}/mailbox.jsonl``.

This package is dev/test-only: it imports ``azure.functions`` and ``aiohttp``, and nothing in
``hitl_core`` imports it (``import hitl_core`` stays free of Azure SDKs). Import
:class:`devhost.server.DevHost` directly.
"""
