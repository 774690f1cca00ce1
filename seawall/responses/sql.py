"""The SQL both backends run (``?`` placeholders; Postgres swaps in ``%s``):
one statement per operation, the conversation chain included (a recursive
query, so loading fifty turns is one round trip)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from seawall.responses.store_api import COLUMNS, JSON_COLUMNS, StoredResponse

_ALIVE = "(expires_at IS NULL OR expires_at > ?)"
_COLS = ", ".join(COLUMNS)

INSERT = (f"INSERT INTO responses ({_COLS}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
          "ON CONFLICT (id) DO UPDATE SET "
          + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("id", "tenant"))
          + " WHERE responses.tenant = excluded.tenant")
GET = f"SELECT {_COLS} FROM responses WHERE tenant = ? AND id = ? AND {_ALIVE}"
DELETE = "DELETE FROM responses WHERE tenant = ? AND id = ?"
CHAIN = f"""
WITH RECURSIVE c(id, prev, depth) AS (
    SELECT id, previous_response_id, 1 FROM responses
     WHERE tenant = ? AND id = ? AND {_ALIVE}
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1 FROM responses r JOIN c ON r.id = c.prev
     WHERE r.tenant = ? AND (r.expires_at IS NULL OR r.expires_at > ?) AND c.depth < ?
)
SELECT {', '.join('r.' + c for c in COLUMNS)} FROM responses r JOIN c ON r.id = c.id
 ORDER BY c.depth DESC"""
PURGE = "DELETE FROM responses WHERE expires_at IS NOT NULL AND expires_at <= ?"
# A background response's event log goes with it (run before PURGE).
PURGE_EVENTS = ("DELETE FROM response_events WHERE response_id IN (SELECT id FROM responses "
                "WHERE expires_at IS NOT NULL AND expires_at <= ?)")
# Rows holding more text than this are decoded on a worker thread (a stored
# response is as large as its request and answer: megabytes at worst).
DECODE_OFF_LOOP_CHARS = 256 * 1024


def chain_args(tenant: str, response_id: str, max_turns: int, now: float) -> tuple[Any, ...]:
    return (tenant, response_id, now, tenant, now, max_turns)


def to_row(r: StoredResponse) -> tuple[Any, ...]:
    """Column values, JSON columns encoded as text."""
    out = []
    for c in COLUMNS:
        v = getattr(r, c)
        out.append(orjson.dumps(v).decode() if c in JSON_COLUMNS and v is not None else v)
    return tuple(out)


def from_row(row: Any) -> StoredResponse:
    """A row (sequence in COLUMNS order) back to a StoredResponse; JSON columns
    may come as text (SQLite) or decoded already (Postgres jsonb)."""
    d = dict(zip(COLUMNS, row, strict=True))
    for c in JSON_COLUMNS:
        if isinstance(d[c], (str, bytes)):
            d[c] = orjson.loads(d[c])
    d["input_items"] = d["input_items"] or []
    d["output"] = d["output"] or []
    d["extra"] = d["extra"] or {}
    return StoredResponse(**d)


async def from_rows(rows: list[Any]) -> list[StoredResponse]:
    """:func:`from_row` for each row, off the event loop when they are large."""
    size = sum(len(v) for row in rows for v in row if isinstance(v, (str, bytes)))
    if size > DECODE_OFF_LOOP_CHARS:
        return await asyncio.to_thread(lambda: [from_row(r) for r in rows])
    return [from_row(r) for r in rows]
