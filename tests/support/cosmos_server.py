"""Launch the local Cosmos DB stand-in (npm ``@vercel/cosmosdb-server``) for a test session.

The stand-in is pinned in ``tools/cosmos-stand-in`` (package.json + package-lock.json, both
committed; ``node_modules`` is not). :func:`cosmos_stand_in` installs it there with ``npm ci`` when
it is missing, starts it on a free loopback port (127.0.0.1 only, plain HTTP via ``--no-ssl``),
waits until it answers, yields where it is, and stops it afterwards.

Why plain HTTP by default: the server's HTTPS mode uses a bundled self-signed certificate, which
forces TLS verification off in every client; on loopback HTTP is as private and needs only that the
SDK does not follow the account's advertised (https) regional endpoints — hence
``enable_endpoint_discovery=False``, which ``CosmosDBCheckpointStorage.from_endpoint`` sets by
itself for a loopback endpoint. ``cosmos_stand_in(tls=True)`` serves HTTPS for what needs it
(Azure AD bearer tokens).

Known gaps of the stand-in (version 1.0.1) and where they are handled:

* a point read of a missing item answers 500 (it dereferences the missing document) instead of
  404: ``CosmosDBCheckpointStorage(stand_in=True)`` recognises exactly that failure as "not found";
* a transactional batch reads the partition key of replace/delete operations from the operation
  body, which the Python SDK does not send, so only ``create`` works in a batch:
  ``stand_in=True`` writes the session document on its own, then the audit documents;
* no TTL expiry (``ttl`` is stored, nothing is deleted), no change feed, no OFFSET/LIMIT, and a
  query with ``partition_key=`` is not scoped to that partition: the storage stores an explicit
  ``expires_at`` and filters on it, pages with keysets/``TOP``, and always filters on
  ``c.session_id``.

The server keeps everything in memory: each launch starts empty.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STAND_IN_DIR = REPO_ROOT / "tools" / "cosmos-stand-in"
CLI = STAND_IN_DIR / "node_modules" / "@vercel" / "cosmosdb-server" / "lib" / "cli.js"

INSTALL_TIMEOUT_S = 300.0
START_TIMEOUT_S = 30.0


class CosmosStandInError(RuntimeError):
    """The stand-in could not be installed or started (the message says what to do)."""


@dataclass(frozen=True)
class CosmosStandIn:
    """A running stand-in: where it listens and the (ignored, but well-formed) account key."""

    endpoint: str
    key: str
    port: int
    pid: int
    log_path: Path


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise CosmosStandInError("node (>= 20) is needed for the Cosmos DB stand-in: apt-get install nodejs npm")
    return node


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Serialise ``npm ci`` between test processes sharing this checkout (parallel runs)."""
    digest = hashlib.sha256(str(STAND_IN_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"hitl-cosmos-stand-in-{digest}.lock"
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_installed() -> Path:
    """Install the pinned stand-in into ``tools/cosmos-stand-in/node_modules`` if it is missing."""
    if CLI.exists():
        return CLI
    npm = shutil.which("npm")
    if npm is None:
        raise CosmosStandInError("npm is needed to install the Cosmos DB stand-in: apt-get install npm")
    with _install_lock():
        if CLI.exists():  # another process installed it while we waited
            return CLI
        result = subprocess.run(
            [npm, "ci", "--prefix", str(STAND_IN_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=STAND_IN_DIR,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0 or not CLI.exists():
            raise CosmosStandInError(
                f"`npm ci --prefix {STAND_IN_DIR}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
    return CLI


def _answers(endpoint: str) -> bool:
    # The HTTPS mode serves the package's bundled self-signed certificate: nothing to verify.
    context = ssl._create_unverified_context() if endpoint.startswith("https:") else None
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=1.0, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _start_once(node: str, cli: Path, log_path: Path, tls: bool) -> tuple[subprocess.Popen[bytes], str, int] | None:
    """Start on a fresh port; None if the port was taken meanwhile (the caller retries)."""
    port = free_port()
    endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [node, str(cli), "--host", "127.0.0.1", "--port", str(port), *([] if tls else ["--no-ssl"])],
            cwd=STAND_IN_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if "EADDRINUSE" in log_path.read_text(errors="replace"):
                return None
            raise CosmosStandInError(
                f"the Cosmos DB stand-in exited with {process.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        if _answers(endpoint):
            return process, endpoint, port
        time.sleep(0.05)
    _stop(process)
    raise CosmosStandInError(f"the Cosmos DB stand-in did not answer on {endpoint} within {START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def cosmos_stand_in(*, tls: bool = False) -> Iterator[CosmosStandIn]:
    """Run the stand-in for the duration of the ``with`` block (install it first if needed).

    ``tls=True`` serves HTTPS with the package's self-signed certificate (clients must not verify
    it: ``HITL_COSMOS_VERIFY_TLS=false``); Azure AD token credentials need it, since the SDK
    refuses to send a bearer token over plain HTTP.
    """
    cli = ensure_installed()
    node = _node()
    log_dir = Path(tempfile.mkdtemp(prefix="hitl-cosmos-stand-in-"))
    log_path = log_dir / "cosmosdb-server.log"
    started = None
    for _ in range(5):
        started = _start_once(node, cli, log_path, tls)
        if started is not None:
            break
    if started is None:
        raise CosmosStandInError("no free loopback port could be bound for the Cosmos DB stand-in")
    process, endpoint, port = started
    # The stand-in ignores authentication, but the SDK signs requests with the key: it must be base64.
    key = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
    try:
        yield CosmosStandIn(endpoint=endpoint, key=key, port=port, pid=process.pid, log_path=log_path)
    finally:
        _stop(process)
        shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":  # manual use: python -m tests.support.cosmos_server
    with cosmos_stand_in() as stand_in:
        print(f"HITL_COSMOS_ENDPOINT={stand_in.endpoint}")
        print(f"HITL_COSMOS_KEY={stand_in.key}")
        print("HITL_COSMOS_VERIFY_TLS=false  (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
