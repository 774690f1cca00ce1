"""Start the real Seawall app on a free loopback port, in a thread of the test process.

The server runs its own event loop (as `seawall serve` does); tests talk to
it over real sockets with the official SDKs and can run coroutines on the
server's loop (e.g. to flush the trace writer) through :meth:`on_server`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from seawall.app import Services, create_app
from seawall.config import Settings, parse_settings
from seawall.serving import uvicorn_options
from tests.servers import ServerThread

T = TypeVar("T")


@dataclass
class Running:
    url: str
    thread: ServerThread
    app: Any

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.thread.server.servers[0].get_loop()

    def on_server(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def traces(self, n: int = 100) -> list[dict[str, Any]]:
        """The latest trace records (after flushing the writer)."""
        self.on_server(self.services.writer.flush())
        return self.on_server(self.services.store.recent_traces(n))


@contextmanager
def run_app(app: Any) -> Iterator[Running]:
    # The production server settings (seawall/serving.py), with a short drain.
    services = app.state.services
    options = {**uvicorn_options(services.settings, services.metrics),
               "timeout_graceful_shutdown": 5}
    thread = ServerThread(app, **options)
    thread.start(timeout=120)
    try:
        yield Running(url=thread.url, thread=thread, app=app)
    finally:
        thread.stop(timeout=30)


@contextmanager
def run_gateway(config: dict[str, Any], tmp_path: Any) -> Iterator[Running]:
    """Build the app from a config dict (data under ``tmp_path``) and serve it."""
    settings: Settings = parse_settings({"data_dir": str(tmp_path / "data"), **config}, env={})
    with run_app(create_app(settings)) as running:
        yield running
