"""Launch a throwaway ``redis-server`` on a free loopback port for tests.

Why a real server: the Redis backend's guarantees (one atomic script per write, key TTLs,
lexicographic sorted sets, error replies) are server behaviour that a fake would only imitate.
The Debian package ``redis-server`` is the stand-in; when it is missing it is installed once
with apt-get (we are root on these machines), serialised by a file lock so parallel test
processes do not race for dpkg.

The server binds 127.0.0.1 only, persists nothing (``--save '' --appendonly no``), runs in a
temporary folder that is removed afterwards, and logs there (the log is quoted when start-up
fails). :class:`RedisServer` can also be killed and restarted on the same port, which the
outage tests use, and can serve TLS only (``tls=True``: a self-signed certificate for
127.0.0.1 made with ``cryptography``; clients trust ``ca_file``), which the ``rediss://`` tests use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port

START_TIMEOUT_S = 15.0
INSTALL_TIMEOUT_S = 600.0
_APT_LOCK = Path(tempfile.gettempdir()) / "hitl-apt-redis.lock"


class RedisServerError(RuntimeError):
    """redis-server could not be installed or started (the message says what to do)."""


def find_redis_server() -> str:
    """Path of ``redis-server``, installing the Debian package once if it is missing."""
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")
         if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.geteuid() != 0:
        raise RedisServerError("redis-server is not installed and we are not root: run "
                               "`sudo apt-get update && sudo apt-get install -y redis-server`")
    with open(_APT_LOCK, "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another test process may be installing it
        found = shutil.which("redis-server")
        if found:
            return found
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                     "-o", "DPkg::Lock::Timeout=300", "redis-server"]):
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                      timeout=INSTALL_TIMEOUT_S, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RedisServerError(f"`{' '.join(cmd)}` failed: {exc}") from exc
            if done.returncode != 0:
                raise RedisServerError(
                    f"`{' '.join(cmd)}` exited {done.returncode}; install redis-server by hand "
                    f"(apt-get install -y redis-server).\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    found = shutil.which("redis-server")
    if not found:
        raise RedisServerError("apt-get installed redis-server but it is not on PATH")
    return found


def make_self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for 127.0.0.1/localhost: (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hitl test redis")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "redis.crt", folder / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _ping(port: int, password: str | None, timeout: float = 0.5, *, tls: bool = False) -> bool:
    """True when the server answers PING (after AUTH when it has a password)."""
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=timeout))
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # readiness probe only; clients verify ca_file
                sock = stack.enter_context(context.wrap_socket(sock))
            payload = b""
            if password is not None:
                pw = password.encode()
                payload += b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw)
            payload += b"*1\r\n$4\r\nPING\r\n"
            sock.sendall(payload)
            data = b""
            deadline = time.monotonic() + timeout
            while b"PONG" not in data and b"-" not in data and time.monotonic() < deadline:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
            return b"+PONG" in data
    except OSError:
        return False


class RedisServer:
    """One redis-server process; ``url`` is where to reach it (with the password, if any)."""

    def __init__(self, *, password: str | None = None, port: int | None = None, tls: bool = False,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.password = password
        self.port = port or free_port()
        self.tls = tls
        self.extra_args = extra_args
        self.binary = find_redis_server()
        self.workdir = Path(tempfile.mkdtemp(prefix="hitl-redis-"))
        self.log_path = self.workdir / "redis.log"
        self.ca_file: Path | None = None
        self._key_file: Path | None = None
        if tls:
            self.ca_file, self._key_file = make_self_signed_cert(self.workdir)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _command(self) -> list[str]:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
               "--protected-mode", "yes"]
        if self.tls:
            cmd[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            cmd += ["--tls-cert-file", str(self.ca_file), "--tls-key-file", str(self._key_file),
                    "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"]
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        return cmd + list(self.extra_args)

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; retries on another port if taken."""
        for attempt in range(3):
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                              cwd=self.workdir, start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if _ping(self.port, self.password, tls=self.tls):
                    return self
                time.sleep(0.02)
            log_text = self.log_path.read_text(errors="replace")[-3000:]
            self.stop()
            if "Address already in use" in log_text and attempt < 2:
                self.port = free_port()
                continue
            raise RedisServerError(f"redis-server did not start on 127.0.0.1:{self.port}; its log:\n{log_text}")
        raise RedisServerError("redis-server could not find a free port")  # pragma: no cover

    def kill(self) -> None:
        """SIGKILL the server (a crash, as far as clients can tell) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        """Terminate the server and wait for it (SIGKILL if it does not stop in 10 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> RedisServer:
        """Start again on the same port (empty: nothing is persisted)."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_server(*, password: str | None = None, tls: bool = False,
                 extra_args: tuple[str, ...] = ()) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped and removed on exit."""
    server = RedisServer(password=password, tls=tls, extra_args=extra_args)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
