"""``python -m devhost``: serve ``function_app.app`` locally (what ``make run`` starts).

Usage::

    python -m devhost [--app function_app:app] [--port 7071] [--data-dir .hitl]
                                [--smtp-port 0] [--log-level INFO]

Order matters, and is why this entry point exists instead of a plain ``DevHost(...)`` call: the
app reads its settings (``hitl_core.settings``) when it is imported, so the listening sockets are
bound and the local stand-ins' addresses are written into the environment **before** the app
module is imported. Only variables the user has not set are filled in:

==================================  ==========================================================
``HITL_STORAGE``                    ``sqlite``
``HITL_DATA_DIR``                   ``--data-dir``, else ``HITL_DATA_DIR``, else ``.hitl``
``HITL_PORT``                       the port actually bound (``--port 0`` picks a free one)
``HITL_EVENTGRID_TOPIC_ENDPOINT``   ``http://127.0.0.1:{port}/runtime/eventgrid/topics/local/api/events``
``HITL_EVENTGRID_TOPIC_KEY``        random, kept in ``{data_dir}/eventgrid-topic.key`` (0600)
``HITL_SMTP_HOST`` / ``_PORT``      ``127.0.0.1`` / the SMTP sink's port
``HITL_SMTP_STARTTLS``              ``false``
``HITL_PUBLIC_BASE_URL``            ``http://127.0.0.1:{port}``
``HITL_AUTH_MODE``                  ``dev`` (caller from the ``X-HITL-User`` header)
``HITL_DIRECTORY`` / ``_FILE``      ``file`` / ``devhost/demo-directory.json`` (twelve demo people with e-mails,
                                    roles and managers; every shipped workflow's requests reach them)
``HITL_NOTIFY_DEFAULT_RECIPIENTS``  ``reviewers@hitl.localhost`` (so requests without e-mail approvers
                                    still show up in the local mailbox)
==================================  ==========================================================

``HITL_SMTP_HOST=off`` turns e-mail off (nothing is mailed, not even to the sink). The SMTP group
is only filled when ``HITL_SMTP_HOST`` is unset (a real mail server keeps its own
port and TLS settings); the Event Grid key only when the endpoint is the local topic. Writing
these defaults is the one place outside :mod:`hitl_core.settings` that touches ``os.environ``:
the process entry point configures the environment that settings then reads.

Before serving, the app is loaded through the Azure Functions worker runtime's own indexing
(:mod:`devhost.worker`): a function the worker would refuse stops the host with the function,
the parameter and the fix, because Azure would start that app with no functions at all.

URLs and a ``curl`` example go to stdout; logs go to stderr; the topic key is never printed.
SIGINT/SIGTERM stop the host cleanly (in-flight requests finish) with exit code 0; a second
signal exits at once with 130.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from hitl_core.settings import Settings, SettingsError

log = logging.getLogger("hitl.devhost")

DEMO_DIRECTORY = Path(__file__).resolve().parent / "demo-directory.json"

_CONTENT_REVIEW_CURL = (
    "curl -X POST {api}/workflows/content-review/sessions -H 'content-type: application/json' "
    "-d '{{\"input\": {{\"draft\": \"Hello\"}}}}'"
)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost",
                                     description="Serve an Azure Functions app locally with embedded stand-ins.")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--port", type=int, default=None, help="HTTP port on 127.0.0.1 (default HITL_PORT or 7071)")
    parser.add_argument("--data-dir", type=Path, default=None, help="state folder (default HITL_DATA_DIR or .hitl)")
    parser.add_argument("--smtp-port", type=int, default=0, help="SMTP sink port (default: a free port)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="no line per HTTP request (the benchmarks: in Azure the host, not the app, writes it)")
    return parser.parse_args(argv)


def _unset(name: str) -> bool:
    return not os.environ.get(name, "").strip()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def apply_environment_defaults(*, port: int, data_dir: Path, smtp_port: int, data_dir_from_cli: bool,
                               topic_key: str) -> dict[str, str]:
    """Fill the local defaults into ``os.environ`` where unset; answers what was set (for the banner)."""
    from .eventgrid import topic_url

    base = f"http://127.0.0.1:{port}"
    endpoint = topic_url(base)
    applied: dict[str, str] = {}

    def default(name: str, value: str, *, force: bool = False) -> None:
        if force or _unset(name):
            os.environ[name] = value
            applied[name] = value

    default("HITL_STORAGE", "sqlite")
    default("HITL_DATA_DIR", str(data_dir), force=data_dir_from_cli)
    default("HITL_PORT", str(port), force=True)
    if _unset("HITL_EVENTGRID_TOPIC_ENDPOINT"):
        default("HITL_EVENTGRID_TOPIC_ENDPOINT", endpoint)
    if os.environ.get("HITL_EVENTGRID_TOPIC_ENDPOINT") == endpoint:
        default("HITL_EVENTGRID_TOPIC_KEY", topic_key)
    if _unset("HITL_SMTP_HOST"):
        default("HITL_SMTP_HOST", "127.0.0.1")
        default("HITL_SMTP_PORT", str(smtp_port), force=True)
        default("HITL_SMTP_STARTTLS", "false", force=True)
    default("HITL_PUBLIC_BASE_URL", base)
    default("HITL_AUTH_MODE", "dev")
    default("HITL_NOTIFY_DEFAULT_RECIPIENTS", "reviewers@hitl.localhost")
    if _unset("HITL_DIRECTORY"):
        default("HITL_DIRECTORY", "file")
        default("HITL_DIRECTORY_FILE", str(DEMO_DIRECTORY))
    return applied


async def _close_app_runtime() -> None:
    """Close the app's storage and publisher clients, when the app is built on ``hitl_core.functions``.

    The devhost itself is app-agnostic; this hook only runs what the adapter offers for the
    purpose (``hitl_core.functions.runtime.close_runtime``) if the app imported it.
    """
    runtime = sys.modules.get("hitl_core.functions.runtime")
    close = getattr(runtime, "close_runtime", None)
    if callable(close):
        await close()


def _banner(host: Any, app_spec: str, applied: dict[str, str], worker_note: str = "") -> str:
    from .server import DURABLE_WEBHOOK_PREFIX

    lines = [f"hitl devhost: serving {app_spec} (Ctrl-C to stop)", ""]
    if worker_note:
        lines += [f"  {worker_note}", ""]
    lines.append(f"  API            {host.api_url}")
    if any(t == "app/inbox" for _, t, _m in host.http_routes):
        lines.append(f"  Reviewer app   {host.api_url}/app/inbox  (sign in as any demo person)")
    lines.append(f"  Functions      {host.base_url}/api/_dev/functions")
    smtp = f" (SMTP sink 127.0.0.1:{host.smtp.port}; also {host.mailbox.path})" if host.smtp else ""
    lines.append(f"  Mailbox        {host.mailbox_url}{smtp}")
    lines.append(f"  Event Grid     {host.eventgrid_topic_url()} (key in {host.data_dir / 'eventgrid-topic.key'})")
    lines.append(f"  Event stats    {host.base_url}/api/_dev/eventgrid")
    if host.durable is not None:
        lines.append(f"  Durable        {host.base_url}{DURABLE_WEBHOOK_PREFIX}")
    lines.append(f"  Data           {host.data_dir}")
    routes: list[tuple[str, str, frozenset[str] | None]] = host.http_routes
    if routes:
        lines += ["", "  HTTP functions:"]
        for name, template, methods in routes:
            verbs = ",".join(sorted(methods)) if methods else "ANY"
            lines.append(f"    {verbs:<12} {host.api_url}/{template}  ({name})")
    others = [f for f in host.functions if f.trigger_type != "httpTrigger"]
    if others:
        lines += ["", "  Other functions:"]
        lines += [f"    {f.trigger_type:<22} {f.name}" + (f"  (failed: {f.error})" if f.error else "") for f in others]
    if applied:
        shown = {k: ("<set>" if k.endswith("_KEY") else v) for k, v in applied.items()}
        lines += ["", "  Environment defaults (set because they were unset):"]
        lines += [f"    {k}={v}" for k, v in shown.items()]
    lines += ["", "Try:"]
    starts = [t for _, t, m in routes if t.lower().startswith("workflows/") and t.lower().endswith("/sessions")]
    if starts or not routes:
        lines.append("  " + _CONTENT_REVIEW_CURL.format(api=host.api_url))
    else:
        template = next((t for _, t, m in routes if m is None or "GET" in m), routes[0][1])
        lines.append(f"  curl {host.api_url}/{template}")
    lines.append(f"  curl {host.mailbox_url}")
    lines.append("")
    lines.append(f"devhost ready on {host.base_url}")
    return "\n".join(lines)


async def _serve(host: Any, app_spec: str, applied: dict[str, str], worker_note: str = "") -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting without a clean shutdown")
            os._exit(130)
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await host.start()
    except BaseException:
        log.exception("the devhost could not start")
        return 1
    print(_banner(host, app_spec, applied, worker_note), flush=True)
    try:
        await stop.wait()
    finally:
        await host.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; answers the process exit code."""
    args = _parse_args(argv)
    level = logging.getLevelName(args.log_level.upper())
    if not isinstance(level, int):
        print(f"error: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if level > logging.DEBUG:  # the Azure SDKs log every request with headers at INFO
        logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(max(level, logging.INFO))  # aiosmtpd's DEBUG shows AUTH lines
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    port = settings.port if args.port is None else args.port
    data_dir: Path = args.data_dir if args.data_dir is not None else settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)

    from .eventgrid import load_or_create_topic_key, topic_url
    from .server import DevHost
    from .smtp_sink import Mailbox, SmtpSink

    try:
        sock = _bind(port)
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{port}: {exc.strerror} (set HITL_PORT or --port)", file=sys.stderr)
        return 2
    port = int(sock.getsockname()[1])
    sink = SmtpSink(Mailbox(data_dir / "mailbox.jsonl"), port=args.smtp_port)
    try:
        smtp_port = sink.bind()
    except OSError as exc:
        sock.close()
        print(f"error: cannot listen for SMTP on 127.0.0.1:{args.smtp_port}: {exc.strerror}", file=sys.stderr)
        return 2
    local_key = load_or_create_topic_key(data_dir)
    applied = apply_environment_defaults(port=port, data_dir=data_dir, smtp_port=smtp_port,
                                         data_dir_from_cli=args.data_dir is not None, topic_key=local_key)
    # the local topic must accept the key the app publishes with (the user's, if they set one)
    effective = Settings.from_env()
    topic_key = local_key
    if effective.eventgrid_topic_endpoint == topic_url(f"http://127.0.0.1:{port}") and effective.eventgrid_topic_key:
        topic_key = effective.eventgrid_topic_key

    from .worker import WorkerRefusedApp, load_app_spec_with_worker

    # The app is loaded by the Azure Functions worker runtime's own indexing and validation (the
    # pinned azure-functions-runtime), so make run refuses exactly what Azure would refuse.
    try:
        app, app_dir, worker_view = load_app_spec_with_worker(args.app)
    except WorkerRefusedApp as exc:
        sock.close()
        sink.stop_sync()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        sock.close()
        sink.stop_sync()
        log.exception("cannot import the app %s", args.app)
        return 1
    host = DevHost(app, port=port, sock=sock, data_dir=data_dir, app_dir=app_dir, smtp=sink,
                   eventgrid_key=topic_key, on_stop=[_close_app_runtime], access_log=args.access_log)
    worker_note = (f"Loaded by the Azure Functions worker (azure-functions-runtime {worker_view.runtime_version}): "
                   f"all {len(worker_view.metadata)} functions index and load as in Azure.")
    return asyncio.run(_serve(host, args.app, applied, worker_note))


if __name__ == "__main__":
    sys.exit(main())
