"""Start the real Seawall app on a free loopback port, in a thread of the test process.

The server runs its own event loop (as `seawall serve` does); tests talk to
it over real sockets with the official SDKs and can run coroutines on the
server's loop (e.g. to flush the trace writer) through :meth:`on_server`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn

from seawall.app import Services, create_app
from seawall.config import Settings, parse_settings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    url: str
    server: uvicorn.Server
    loop: asyncio.AbstractEventLoop
    app: Any

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    def on_server(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def traces(self, n: int = 100) -> list[dict[str, Any]]:
        """Every trace record so far (after flushing the writer)."""
        self.on_server(self.services.writer.flush())
        return self.on_server(self.services.store.recent_traces(n))


@contextmanager
def run_app(app: Any, port: int | None = None) -> Iterator[Running]:
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio",
                            http="httptools", lifespan="on", log_level="warning",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    loops: list[asyncio.AbstractEventLoop] = []

    def target() -> None:
        loop = asyncio.new_event_loop()
        loops.append(loop)
        loop.run_until_complete(server.serve())
        loop.close()

    thread = threading.Thread(target=target, daemon=True, name=f"server-{port}")
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("server thread exited during startup (see the log above)")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start")
        time.sleep(0.01)
    try:
        yield Running(url=f"http://127.0.0.1:{port}", server=server, loop=loops[0], app=app)
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def run_gateway(config: dict[str, Any], tmp_path: Any) -> Iterator[Running]:
    """Build the app from a config dict (data under ``tmp_path``) and serve it."""
    settings: Settings = parse_settings({"data_dir": str(tmp_path / "data"), **config}, env={})
    with run_app(create_app(settings)) as running:
        yield running
