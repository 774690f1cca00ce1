"""Real servers for tests: any ASGI app under uvicorn on a free loopback port.

The server runs in its own thread with its own event loop, so a test's loop
talks to it over a real socket exactly as a client would, and the helpers
can be used from sync or async fixtures alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn

from seawall.providers.fake import FakeBehavior
from seawall.providers.fake_server import QuietDisconnects, create_app

_quiet = QuietDisconnects()


class ServerThread:
    """A started uvicorn server; :meth:`stop` shuts it down and joins the thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", **config: Any) -> None:
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))  # the kernel picks a free port: no race with other tests
        self.port: int = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        options: dict[str, Any] = {"log_level": "warning", "access_log": False,
                                   "timeout_graceful_shutdown": 1, "lifespan": "auto"}
        options.update(config)
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                        name=f"uvicorn:{self.port}", daemon=True)
        self._sock = sock

    def start(self, timeout: float = 10.0) -> ServerThread:
        logging.getLogger("uvicorn.error").addFilter(_quiet)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} failed to start")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server on port {self.port} not up after {timeout}s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()


def start_asgi_in_thread(app: Any, **config: Any) -> ServerThread:
    """Serve ``app`` on 127.0.0.1:<free port>; returns once it accepts connections."""
    return ServerThread(app, **config).start()


@contextmanager
def run_asgi_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """``with run_asgi_in_thread(app) as url:`` serve ``app`` for the block."""
    server = start_asgi_in_thread(app, **config)
    try:
        yield server.url
    finally:
        server.stop()


def start_fake_upstream(behavior: FakeBehavior | None = None, *, api_key: str | None = None,
                        seed: int | None = None) -> tuple[str, Callable[[], None]]:
    """The fake OpenAI + Anthropic upstream on a free port: ``(base_url, stop)``."""
    server = start_asgi_in_thread(create_app(behavior, api_key=api_key, seed=seed))
    return server.url, server.stop


class FakeUpstreamClient:
    """Blocking helper for the fake's ``/_fake/*`` scripting routes."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def script(self, default: dict[str, Any] | None = None,
               queue: list[dict[str, Any]] | None = None) -> Any:
        body: dict[str, Any] = {}
        if default is not None:
            body["default"] = default
        if queue is not None:
            body["queue"] = queue
        return self._call("POST", "/_fake/script", body)

    def reseed(self, seed: int | None) -> Any:
        """Restart the ``error_probability`` draws from ``seed`` (None: unseeded)."""
        return self._call("POST", "/_fake/script", {"seed": seed})

    def calls(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_fake/calls")
        return result

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                       within_s: float = 3.0) -> dict[str, Any]:
        """Poll ``/_fake/calls`` until ``predicate`` holds. Server-side effects
        (noticing a hang-up) are asynchronous, and the caller's loop must keep
        running meanwhile so that its closed sockets really close."""
        deadline = time.monotonic() + within_s
        while True:
            calls = self.calls()
            if predicate(calls) or time.monotonic() > deadline:
                return calls
            await asyncio.sleep(0.01)


def free_port() -> int:
    """A port nothing listens on right now (for servers started as subprocesses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CLOSED: socket.socket | None = None


def closed_port() -> int:
    """A loopback port where connecting is refused at once (RST). The port stays
    bound, but not listening, by a socket kept for the whole session, so no
    other server can take it meanwhile (as it could a merely free port)."""
    global _CLOSED
    if _CLOSED is None:
        _CLOSED = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _CLOSED.bind(("127.0.0.1", 0))
    return int(_CLOSED.getsockname()[1])


@contextmanager
def blackhole_listener() -> Iterator[tuple[str, int]]:
    """``(host, port)`` where a TCP connect neither succeeds nor is refused: it
    times out, as with a firewalled or overloaded upstream.

    A listener with backlog 0 that never accepts: on Linux its accept queue
    holds one connection (full means ``ack_backlog > backlog``); once that is
    taken by a filler connection, the kernel drops further SYNs (with the default
    ``net.ipv4.tcp_abort_on_overflow = 0``, and syncookies do not apply to a
    full accept queue), so clients sit in SYN_SENT, retransmitting, until their
    own timeout. A second, non-blocking filler covers kernels whose queue holds
    one more. Checked on Linux 6.x: ``socket.create_connection(addr, timeout=0.5)``
    raises ``TimeoutError`` after 0.5 s.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        addr = listener.getsockname()
        fillers.append(socket.create_connection(addr, timeout=1.0))
        extra = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        fillers.append(extra)
        extra.setblocking(False)
        extra.connect_ex(addr)  # EINPROGRESS: it stays in SYN_SENT once the queue is full
        yield addr[0], int(addr[1])
    finally:
        for s in fillers:
            s.close()
        listener.close()


def wait_until_ready(url: str, proc: subprocess.Popen[str], within_s: float) -> None:
    """Poll a `seawall serve` subprocess's /ready until 200; kill it and raise
    with its output if it exits or takes longer than ``within_s``."""
    import httpx

    deadline = time.monotonic() + within_s
    while True:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"seawall serve did not become ready:\n{out}")
        time.sleep(0.1)


class HealthProbe:
    """``with HealthProbe(url) as probe:`` asks ``/health`` every 50 ms on a
    fresh connection, from a thread, for the block; keeps the slowest answer
    (a failure counts as infinitely slow). :meth:`check` asserts a bound."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = 0.0
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                ok = httpx.get(self.url + "/health", timeout=10).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.slowest = max(self.slowest, time.monotonic() - t0 if ok else float("inf"))
            self.answered += ok
            self._stop.wait(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def check(self, bound_s: float) -> None:
        assert self.answered >= 1, "the probe never got an answer"
        assert self.slowest < bound_s, f"a probe took {self.slowest:.2f}s"


def serve_process(tmp: Path, fake: FakeUpstreamClient, args: tuple[str, ...] = (),
                  port: int | None = None,
                  **config: Any) -> tuple[str, subprocess.Popen[str], Path]:
    """A real ``seawall serve`` (model ``m`` on ``fake``, anonymous loopback,
    data under ``tmp``; ``args`` added to its command line), returned once
    ready: (url, process, config file)."""
    port = port or free_port()
    conf = tmp / "seawall.yaml"
    conf.write_text(json.dumps({
        "data_dir": str(tmp / "data"),
        "server": {"port": port, "log_level": "warning"},
        "auth": {"allow_anonymous_loopback": True},
        "providers": {"up": {"type": "openai", "base_url": fake.base_url + "/v1"}},
        "models": {"m": {"provider": "up"}},
        **config,
    }))
    proc = subprocess.Popen([sys.executable, "-m", "seawall.cli", "serve", "--config", str(conf),
                             *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "SEAWALL_CONFIG": ""})
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, proc, within_s=60)
    return url, proc, conf


class WebhookReceiver:
    """A webhook endpoint on loopback: keeps every JSON body by path; the
    first POST to /flaky gets a 503."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.flaky_left = 1
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    if self.path == "/flaky" and outer.flaky_left:
                        outer.flaky_left -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    outer.got.append((self.path, json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for p, b in self.got if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
