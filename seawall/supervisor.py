"""``seawall serve --workers N``: N server processes sharing one listening socket.

The parent binds the port once and hands the socket to N spawned children,
each a whole gateway (its own event loop, pools and trace writer; every
shared decision goes through Postgres and Redis). The kernel gives each new
connection to whichever child accepts first. The parent does nothing else:
it forwards SIGTERM/SIGINT once to every child (each drains as a single
server would), restarts a child that dies unexpectedly (logged and counted
in its exit line), and gives up if children keep dying at start.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from typing import Any

log = logging.getLogger("seawall")

RESTART_WINDOW_S = 10.0  # a child that dies sooner than this after starting...
MAX_FAST_DEATHS = 3  # ...this many times in a row stops the whole server


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the parent dies (even by SIGKILL), so
    workers never outlive their supervisor (they drain as on any SIGTERM)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphan is then ended by whoever ends the process group


def _child(config: str | None, host: str, port: int, sock: socket.socket,
           parent: int) -> None:
    # Our own process group: a terminal's Ctrl-C reaches the parent only, which
    # forwards one SIGTERM (a second signal would make uvicorn skip the drain).
    os.setpgrp()
    _die_with_parent()
    if os.getppid() != parent:  # it died before we asked to be told
        return
    from seawall.cli import _serve_process

    _serve_process(config, host, port, sock)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve_workers(config: str | None, host: str, port: int, workers: int) -> int:
    """Run until told to stop; the exit status (0: every child drained cleanly)."""
    from seawall.observe.logs import setup_logging

    setup_logging("info", json_logs=True)
    sock = _bind(host, port)
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, Any] = {}
    started: dict[int, float] = {}
    stopping = False
    fast_deaths = 0
    restarts = 0

    def start(slot: int) -> None:
        p = ctx.Process(target=_child, args=(config, host, port, sock, os.getpid()),
                        name=f"seawall-{slot}",
                        daemon=False)
        p.start()
        procs[slot], started[slot] = p, time.monotonic()

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        log.info("stopping %d workers (signal %d)", len(procs), signum)
        for p in procs.values():
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(workers):
        start(slot)
    log.info("serving on %s:%d with %d worker processes", host, port, workers)
    status = 0
    while procs:
        time.sleep(0.2)
        for slot, p in list(procs.items()):
            if p.is_alive():
                continue
            p.join()
            del procs[slot]
            if stopping:
                # -SIGTERM: it was still starting (not serving yet) when told to stop.
                if p.exitcode not in (0, -signal.SIGTERM):
                    log.error("worker %d exited with %s while stopping", slot, p.exitcode)
                    status = 1
                continue
            restarts += 1
            quick = time.monotonic() - started[slot] < RESTART_WINDOW_S
            fast_deaths = fast_deaths + 1 if quick else 0
            log.error("worker %d exited with %s; restarting it (restart %d)", slot, p.exitcode,
                      restarts, extra={"worker": slot, "restarts": restarts})
            if fast_deaths >= MAX_FAST_DEATHS:
                log.critical("workers keep dying at start (%d in a row): stopping", fast_deaths)
                stop(signal.SIGTERM, None)
                status = 1
                continue
            start(slot)
    sock.close()
    return status
