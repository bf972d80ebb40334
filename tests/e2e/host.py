"""Run `make run`'s server (python -m devhost) as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
#: Who the tests act as unless they say otherwise: rita, of the ``reviewers`` role in the demo
#: directory (devhost/demo-directory.json), so she may start, read and decide content reviews.
DEFAULT_USER = "rita"


class LocalHost:
    """One devhost process; ``restart()`` keeps the data folder and port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None,
                 options: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.options = options  # more command-line options of python -m devhost
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = data_dir / f"host-{self.port}.log"

    def start(self, **env: str) -> None:
        self.extra_env.update(env)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
        full_env.update({"HITL_PORT": str(self.port), "HITL_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"})
        full_env.update(self.extra_env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devhost", "--app", "function_app:app", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), *self.options],
                cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, text=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"devhost exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/api/health", timeout=1).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"devhost did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, **env: str) -> None:
        self.stop()
        self.start(**env)

    # -- API helpers ----------------------------------------------------------------------
    def client(self, user: str | None = DEFAULT_USER, **kwargs: Any) -> httpx.Client:
        """An API client acting as ``user`` of the demo directory (``None``: anonymous)."""
        headers = {"X-HITL-User": user} if user else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(base_url=self.base, timeout=30, headers=headers, **kwargs)

    def mailbox(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.base}/api/_dev/mailbox", timeout=10)
        response.raise_for_status()
        data = response.json()
        return list(data["messages"] if isinstance(data, dict) else data)


@contextmanager
def running_host(data_dir: Path, **env: str) -> Iterator[LocalHost]:
    host = LocalHost(data_dir, env)
    host.start()
    try:
        yield host
    finally:
        host.stop()


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
