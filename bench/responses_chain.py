#!/usr/bin/env python3
"""Conversation turn overhead: what a ``previous_response_id`` request waits
for before its upstream call (docs/responses.md) -- loading the chain from
the store (one recursive query), decoding it and trimming it to the token
budget (each turn's tokens were counted when it was stored) -- at a 50-turn
conversation, on SQLite and on a loopback Postgres.

Each turn: a ~60-word question and a ~150-word answer. One call at a time.

Usage (from the repo root; ~30 s)::

    .venv/bin/python bench/responses_chain.py [--turns 50] [-n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from seawall.config import ResponsesSettings, StoreSettings
from seawall.ml.tokens import TokenCounter
from seawall.responses.service import ResponseService
from seawall.responses.sqlite_store import SqliteResponseStore
from seawall.responses.store_api import ResponseStore, StoredResponse
from seawall.store.pg import Postgres

QUESTION = " ".join(f"question{i}" for i in range(60))
ANSWER = " ".join(f"answer{i}" for i in range(150))


def _turn(i: int, prev: str | None) -> StoredResponse:
    return StoredResponse(
        id=f"resp_{i:04d}", tenant="t", model="m", status="completed", created_at=time.time(),
        previous_response_id=prev,
        input_items=[{"type": "message", "id": f"msg_q{i}", "role": "user", "status": "completed",
                      "content": [{"type": "input_text", "text": QUESTION}]}],
        output=[{"type": "message", "id": f"msg_a{i}", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]}],
        usage={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}, extra={})


async def _run(name: str, store: ResponseStore, turns: int, n: int) -> None:
    tokens = TokenCounter()
    tokens.warm_up()
    svc = ResponseService(ResponsesSettings(retention_days=None), store, tokens)
    await svc.start()
    prev = None
    for i in range(turns):
        await svc.save(_turn(i, prev))  # as the route stores it: tokens counted once
        prev = f"resp_{i:04d}"
    assert prev is not None
    new = [{"type": "message", "role": "user", "content": [{"type": "input_text",
                                                             "text": "next"}]}]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conv = await svc.conversation("t", "m", "be brief", prev, new)
        times.append((time.perf_counter() - t0) * 1000)
    assert conv.turns_kept == turns, conv
    await svc.close()
    times.sort()
    print(f"| {name} | {turns} | {conv.history_tokens} | {statistics.median(times):.2f} | "
          f"{times[int(len(times) * 0.99) - 1]:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    print("| backend | turns | history tokens | p50 ms | p99 ms |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run("sqlite", SqliteResponseStore(Path(tmp) / "r.db"), args.turns, args.n))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests/
    from seawall.store.migrate import migrate
    from tests.services import create_database, postgres_server

    with postgres_server() as server:
        url = create_database(server)
        migrate(url)
        pg = Postgres(StoreSettings(kind="postgres", url=url))

        async def run_pg() -> None:
            from seawall.responses.pg_store import PostgresResponseStore

            try:
                await _run("postgres", PostgresResponseStore(pg), args.turns, args.n)
            finally:
                await pg.close()

        asyncio.run(run_pg())


if __name__ == "__main__":
    main()
