"""``seawall worker``: a process that runs jobs and serves no HTTP.

It builds the same Services as ``seawall serve`` (so every job kind has the
pipeline, stores and models it needs) with the job runner on, and waits for
SIGTERM or SIGINT: then it stops claiming, lets running jobs finish for
``shutdown.drain_timeout_s`` (bounded) and releases the rest.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from seawall.config import Settings

log = logging.getLogger("seawall.jobs")


async def run_worker(settings: Settings, metrics_port: int | None = None,
                     metrics_host: str = "127.0.0.1") -> int:
    from seawall.app import Services

    services = Services(settings, run_jobs=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await services.start()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, metrics_host, registry=services.metrics.registry)
    runner = services.job_runner
    assert runner is not None
    log.info("seawall worker %s ready", runner.owner, extra={"owner": runner.owner})
    try:
        await stop.wait()
        log.info("seawall worker %s stopping: %d jobs running", runner.owner, runner.running)
    finally:
        await services.close()
    return 0
