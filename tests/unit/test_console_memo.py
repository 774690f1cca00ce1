"""The overview's memo of rollup reads (seawall/console/overview.py Memo):
a repeat is not asked again, and what it keeps is bounded by rows."""

from __future__ import annotations

from typing import Any

from seawall.console.overview import Memo
from seawall.console.queries import TraceQueries


async def test_repeats_are_kept_within_a_bound_of_rows() -> None:
    asked: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        asked.append((sql, args))
        return [{"n": i} for i in range(int(args[0]))]

    memo = Memo(TraceQueries(fetch, postgres=False, scan_rows=10), max_rows=100)
    assert len(await memo.fetch("q", (20,))) == 20
    assert len(await memo.fetch("q", (20,))) == 20 and len(asked) == 1  # kept
    await memo.fetch("q", (26,))  # over a quarter of the bound: answered, not kept
    await memo.fetch("q", (26,))
    assert len(asked) == 3
    for n in (21, 22, 23, 24):  # 20 + 21 + 22 + 23 + 24 > 100: the oldest goes first
        await memo.fetch("q", (n,))
    await memo.fetch("q", (24,))
    assert len(asked) == 7
    await memo.fetch("q", (20,))
    assert len(asked) == 8  # 20 was evicted
