"""Where the local host's time goes under the load of ``bench.http_load`` (pyinstrument).

Starts ``python -m devhost`` under pyinstrument (statistical, 1 ms samples of the main thread:
the event loop, where every request is served), drives it with the same load clients as
``bench.http_load`` for ``--seconds``, stops it, and prints

* the share of the busy (non-idle) samples per cost group (HTTP server, function adapter,
  engine, storage, pydantic, Event Grid publish, topic delivery, logging, ...), and
* the functions with the most self time and the most inclusive time,

so the largest costs can be named and compared before and after a change. Idle time (the loop
waiting in ``select``/``epoll``) is left out. pyinstrument is a dev tool, not a dependency of
the project: ``.venv/bin/python -m pip install pyinstrument`` first.

``--preload N`` stores N pending sessions first (as ``bench.http_load`` does for its second phase), to
see what a larger store costs.

Run: ``python -m bench.profile_host [--seconds 20] [--clients 32] [--preload 0] [--notify] [--top 25]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.http_load import (
    DIRECTORY,
    ROOT,
    Host,
    _wait_healthy,
    environment_without_hitl_settings,
    loadavg,
    preload,
    run_load,
)

#: (group, substring of the file path or function name), first match wins.
GROUPS: list[tuple[str, str]] = [
    ("idle (event loop waiting)", "selectors.py"),
    ("logging", "/logging/"),
    ("local Event Grid topic (devhost/eventgrid.py)", "devhost/eventgrid.py"),
    ("devhost HTTP dispatch (devhost/server.py)", "devhost/server.py"),
    ("aiohttp (server + client)", "/aiohttp/"),
    ("azure.functions (HttpRequest/Response)", "/azure/functions/"),
    ("Event Grid client (azure-eventgrid, azure-core)", "/azure/eventgrid/"),
    ("Event Grid client (azure-eventgrid, azure-core)", "/azure/core/"),
    ("durable functions SDK", "/azure/durable_functions/"),
    ("pydantic", "/pydantic"),
    ("sqlite3", "sqlite3"),
    ("json", "/json/"),
    ("HTTP adapter (hitl_core/functions)", "hitl_core/functions/"),
    ("checkpoint storage (hitl_core/checkpoint)", "hitl_core/checkpoint/"),
    ("engine (hitl_core/workflow)", "hitl_core/workflow/"),
    ("notifications (hitl_core/notify)", "hitl_core/notify/"),
    ("service + views (hitl_core/service.py, views.py)", "hitl_core/service.py"),
    ("service + views (hitl_core/service.py, views.py)", "hitl_core/views.py"),
    ("access / audit / directory", "hitl_core/access.py"),
    ("access / audit / directory", "hitl_core/audit.py"),
    ("access / audit / directory", "hitl_core/directory/"),
    ("other hitl_core", "hitl_core/"),
    ("workflows/", "workflows/"),
    ("asyncio", "/asyncio/"),
    ("Python's datetime parsing (_strptime)", "_strptime.py"),
    ("inspect (signatures)", "inspect.py"),
    ("regular expressions (re)", "/re/"),
    ("threads (to_thread hand-off)", "concurrent/futures"),
    ("threads (to_thread hand-off)", "threading.py"),
    ("e-mail (aiosmtplib, email)", "/email/"),
    ("e-mail (aiosmtplib, email)", "aiosmtplib"),
]


def group_of(filename: str, function: str) -> str:
    where = f"{filename}:{function}"
    for name, needle in GROUPS:
        if needle in where:
            return name
    if filename.startswith("<") or "built-in" in function or filename == "~":
        return "builtins (C functions)"
    return "other"


IDLE_FUNCTIONS = ("epoll.poll", "select.poll", "poll", "select")
STARTUP_FUNCTIONS = ("_find_and_load", "load_app_spec_with_worker", "_bootstrap")


def _label(frame: Any) -> str:
    path = frame.file_path or ""
    short = path.replace(str(ROOT) + "/", "")
    for marker in ("site-packages/", "lib/python3.13/"):
        if marker in short:
            short = short.split(marker, 1)[1]
    return f"{short}:{frame.line_no}({frame.function})" if path else str(frame.function)


def summarise(session_path: Path, top: int) -> dict[str, Any]:
    """Self time per cost group and per function, and inclusive time per function (recursion counted
    once), over the main thread's busy samples; idle (``[await]``, epoll) and start-up (imports, the
    worker's indexing) apart."""
    from pyinstrument.session import Session

    root = Session.load(str(session_path)).root_frame()
    by_group: dict[str, float] = defaultdict(float)
    by_self: dict[str, float] = defaultdict(float)
    by_inclusive: dict[str, float] = defaultdict(float)
    in_group: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    idle = startup = 0.0
    # (frame, labels of its ancestors, under start-up, (label, group) of the nearest real frame)
    stack: list[tuple[Any, frozenset[str], bool, tuple[str, str]]] = [(root, frozenset(), False, ("?", "other"))]
    while stack:
        frame, ancestors, in_startup, owner = stack.pop()
        identifier = str(getattr(frame, "identifier", ""))
        function = str(frame.function or "")
        if frame.is_synthetic:
            if "[await]" in identifier or "out-of-context" in identifier:
                idle += frame.time
            elif in_startup:
                startup += frame.time
            else:  # "[self]": time spent in the owning frame itself
                by_group[owner[1]] += frame.time
                by_self[owner[0]] += frame.time
                in_group[owner[1]][owner[0]] += frame.time
            continue
        if function in IDLE_FUNCTIONS or (function == "select" and "selectors" in (frame.file_path or "")):
            idle += frame.time
            continue
        in_startup = in_startup or function in STARTUP_FUNCTIONS
        label = _label(frame)
        group = group_of(frame.file_path or "<built-in>", function)
        if group.startswith("builtins"):  # a C function's time belongs to whoever called it
            group = owner[1]
        own = frame.time - sum(c.time for c in frame.children)
        if in_startup:
            startup += own
        else:
            by_group[group] += own
            by_self[label] += own
            in_group[group][label] += own
            if label not in ancestors:
                by_inclusive[label] += frame.time
        stack.extend((c, ancestors | {label}, in_startup, (label, group)) for c in frame.children)
    busy = sum(by_group.values())
    skip = ("asyncio/", "<module>", "runpy", "pyinstrument", "devhost/__main__.py", "[self]", "threading.py")

    def rows(values: dict[str, float], n: int) -> list[dict[str, Any]]:
        ordered = sorted(values.items(), key=lambda kv: -kv[1])
        return [{"function": f, "seconds": round(t, 2), "share": round(t / busy, 3)} for f, t in ordered
                if not any(x in f for x in skip)][:n]

    return {
        "busy_s": round(busy, 2), "idle_s": round(idle, 2), "startup_s": round(startup, 2),
        "groups": [{"group": g, "seconds": round(t, 2), "share": round(t / busy, 3)}
                   for g, t in sorted(by_group.items(), key=lambda kv: -kv[1])],
        "top_self": rows(by_self, top),
        "top_self_per_group": {g: rows(v, 6) for g, v in in_group.items()},
        "top_inclusive": rows(by_inclusive, top),
    }


class ProfiledHost(Host):
    def __init__(self, data_dir: Path, env: dict[str, str], stats_path: Path) -> None:
        super().__init__(data_dir, env)
        self.stats_path = stats_path

    def start(self) -> None:
        env = environment_without_hitl_settings()
        env.update({"HITL_DATA_DIR": str(self.data_dir), "HITL_PORT": str(self.port), **DIRECTORY, **self.env})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyinstrument", "-i", "0.001", "-r", "pyisession", "-o", str(self.stats_path),
             "-m", "devhost", "--app", "function_app:app", "--no-access-log", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--smtp-port", str(self.smtp_port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(self.data_dir / "host.log", "ab"),
        )
        _wait_healthy(f"{self.base}/api/health", self.proc, "devhost under pyinstrument")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--preload", type=int, default=0, help="pending sessions stored before the run")
    parser.add_argument("--notify", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile_host.json")
    ns = parser.parse_args()
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        raise SystemExit("pyinstrument is not installed: .venv/bin/python -m pip install pyinstrument") from None
    command = "python -m bench.profile_host " + shlex.join(sys.argv[1:])
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="hitl-profile-") as tmp:
        data_dir = Path(tmp)
        stats_path = data_dir / "devhost.pyisession"
        env = {"HITL_NOTIFY_DEFAULT_RECIPIENTS": "reviewers@example.test"} if ns.notify else {"HITL_SMTP_HOST": "off"}
        if ns.preload:
            asyncio.run(preload(data_dir, ns.preload))
        host = ProfiledHost(data_dir, env, stats_path)
        host.start()
        try:
            asyncio.run(run_load(host.base, 4, 3, "warm"))
            load = asyncio.run(run_load(host.base, ns.clients, ns.seconds, "p"))
            host.drain_events()
        finally:
            host.stop()
        summary = summarise(stats_path, ns.top)
        shutil.copy(stats_path, ns.out.with_suffix(".pyisession"))
    summary["load"] = load
    summary["meta"] = {"date": dt.date.today().isoformat(), "command": command.strip(), "loadavg_before": before,
                       "loadavg_after": loadavg()}
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(summary, indent=2))
    meta = summary["meta"]
    print(f"{meta['date']} · `{meta['command']}` · load average {meta['loadavg_before']} -> {meta['loadavg_after']}")
    print(f"under the profiler: {load['cycles_per_s']} cycles/s (profiling slows the host; compare shares, not speed)")
    print(f"main thread busy {summary['busy_s']} s (start-up {summary['startup_s']} s apart), "
          f"idle {summary['idle_s']} s\n")
    print("| cost group | share of busy time |\n|---|---|")
    for g in summary["groups"]:
        print(f"| {g['group']} | {100 * g['share']:.1f}% |")
    print("\nlargest self time:")
    for row in summary["top_self"]:
        print(f"  {100 * row['share']:5.1f}%  {row['function']}")
    print("\nlargest inclusive time:")
    for row in summary["top_inclusive"]:
        print(f"  {100 * row['share']:5.1f}%  {row['function']}")
    print(f"\nresults: {ns.out}")


if __name__ == "__main__":
    main()
