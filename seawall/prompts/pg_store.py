"""The prompt store on the shared Postgres: the same versions, labels and
label moves as seawall/prompts/store.py, for any number of replicas.

Every write moves one generation counter in its transaction (and, done
first, locks it: prompt writes are rare, so they simply queue). A replica
reads the counter at most every ``max_age_s`` (0.5 s) and its registry drops
what it cached when it moved, so a rollback from the CLI reaches every
replica's next request within a second; this process's own writes are seen
at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import orjson
import psycopg
from psycopg.rows import dict_row

from seawall.prompts.errors import PromptNotFound
from seawall.prompts.model import LabelMove, PromptSpec, PromptVersion
from seawall.prompts.store import PromptSummary, PushOutcome, _move, _version, undo_target
from seawall.store.pg import Postgres

__all__ = ["PostgresPromptStore"]

Conn = psycopg.Connection[Any]
Action = Literal["push", "label", "rollback"]


class PostgresPromptStore:
    """Every prompt's versions, labels and label history, shared by every replica."""

    remote = True

    def __init__(self, pg: Postgres, max_age_s: float = 0.5) -> None:
        self.pg = pg
        self.max_age_s = max_age_s
        self._seen: tuple[int, float] | None = None  # (generation, when read)
        self._lock = threading.Lock()

    def open(self) -> PostgresPromptStore:
        return self

    def close(self) -> None:
        """The pools belong to the process (``Stores.close`` ends them)."""

    @contextmanager
    def _conn(self) -> Iterator[Conn]:
        with self.pg.sync_pool().connection() as conn:
            yield conn

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(sql, args).fetchall()

    @contextmanager
    def _write(self) -> Iterator[Conn]:
        """One write transaction; the generation moves (and is locked) first."""
        try:
            with self._conn() as conn, conn.transaction():
                conn.execute("UPDATE prompt_meta SET value = value + 1 WHERE key = 'generation'")
                yield conn
        finally:
            self._seen = None  # our own change: the next read sees it

    # Generation.

    def generation(self) -> int:
        seen = self._seen
        if seen is not None and time.monotonic() - seen[1] < self.max_age_s:
            return seen[0]
        with self._lock:  # one read for many threads asking at once
            seen = self._seen
            if seen is not None and time.monotonic() - seen[1] < self.max_age_s:
                return seen[0]
            with self._conn() as conn:
                row = conn.execute(
                    "SELECT value FROM prompt_meta WHERE key = 'generation'").fetchone()
            assert row is not None
            self._seen = (int(row[0]), time.monotonic())
            return int(row[0])

    def peek_generation(self) -> int | None:
        seen = self._seen
        if seen is not None and time.monotonic() - seen[1] < self.max_age_s:
            return seen[0]
        return None

    # Reads.

    def version(self, name: str, version: int) -> PromptVersion | None:
        rows = self._rows("SELECT * FROM prompt_versions WHERE name = %s AND version = %s",
                          (name, version))
        return _version(rows[0]) if rows else None

    def latest(self, name: str) -> PromptVersion | None:
        rows = self._rows("SELECT * FROM prompt_versions WHERE name = %s "
                          "ORDER BY version DESC LIMIT 1", (name,))
        return _version(rows[0]) if rows else None

    def label_version(self, name: str, label: str) -> int | None:
        with self._conn() as conn:
            row = conn.execute("SELECT version FROM prompt_labels WHERE name = %s "
                               "AND label = %s", (name, label)).fetchone()
        return None if row is None else int(row[0])

    def labels(self, name: str) -> dict[str, int]:
        with self._conn() as conn:
            rows = conn.execute("SELECT label, version FROM prompt_labels WHERE name = %s "
                                "ORDER BY label", (name,)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def versions(self, name: str) -> list[PromptVersion]:
        return [_version(r) for r in self._rows(
            "SELECT * FROM prompt_versions WHERE name = %s ORDER BY version", (name,))]

    def moves(self, name: str, label: str | None = None) -> list[LabelMove]:
        sql = "SELECT * FROM prompt_label_moves WHERE name = %s"
        args: list[str] = [name]
        if label is not None:
            sql += " AND label = %s"
            args.append(label)
        return [_move(r) for r in self._rows(sql + " ORDER BY id", args)]

    def summaries(self) -> list[PromptSummary]:
        rows = self._rows("SELECT name, MAX(version) AS latest, COUNT(*) AS versions, "
                          "MAX(created_at) AS updated_at FROM prompt_versions GROUP BY name "
                          "ORDER BY name")
        by_name: dict[str, dict[str, int]] = {}
        for r in self._rows("SELECT name, label, version FROM prompt_labels "
                            "ORDER BY name, label"):
            by_name.setdefault(r["name"], {})[r["label"]] = int(r["version"])
        return [PromptSummary(r["name"], int(r["latest"]), int(r["versions"]), r["updated_at"],
                              by_name.get(r["name"], {})) for r in rows]

    # Writes.

    def push(self, name: str, spec: PromptSpec, labels: Sequence[str], *,
             label_new: Sequence[str] = (), author: str | None = None,
             source: str | None = None) -> PushOutcome:
        """Store ``spec`` as the next version unless it equals the latest one,
        then point ``labels`` at the result (``label_new`` too when this is
        the prompt's first version), all in one transaction."""
        content_hash = spec.content_hash
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT version, content_hash FROM prompt_versions "
                               "WHERE name = %s ORDER BY version DESC LIMIT 1",
                               (name,)).fetchone()
            created = row is None or row[1] != content_hash
            number = 1 if row is None else int(row[0]) + (1 if created else 0)
            if created:
                conn.execute(
                    "INSERT INTO prompt_versions (name, version, content_hash, content, author, "
                    "source, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (name, number, content_hash, orjson.dumps(spec.to_dict()).decode(), author,
                     source, now))
            wanted = [*labels, *(label_new if row is None else ())]
            moves = [m for label in dict.fromkeys(wanted)
                     if (m := _set(conn, name, label, number, "push", author)) is not None]
            with conn.cursor(row_factory=dict_row) as cur:
                stored = cur.execute("SELECT * FROM prompt_versions WHERE name = %s "
                                     "AND version = %s", (name, number)).fetchone()
        assert stored is not None
        return PushOutcome(_version(stored), created, moves)

    def set_label(self, name: str, label: str, version: int,
                  actor: str | None = None) -> LabelMove | None:
        """Point ``label`` at ``version``; None when it already did."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM prompt_versions WHERE name = %s AND version = %s",
                            (name, version)).fetchone() is None:
                raise PromptNotFound(f"Prompt {name!r} has no version {version}.",
                                     param="version")
            return _set(conn, name, label, version, "label", actor)

    def rollback(self, name: str, label: str, actor: str | None = None) -> LabelMove:
        """Undo the label's latest move not already undone (see the SQLite store)."""
        with self._write() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("SELECT * FROM prompt_label_moves WHERE name = %s "
                               "AND label = %s ORDER BY id", (name, label)).fetchall()
            top = undo_target(name, label, [_move(r) for r in rows])
            assert top.from_version is not None
            move = _set(conn, name, label, top.from_version, "rollback", actor)
            assert move is not None  # the label points at top.to_version, not from_version
            return move


def _set(conn: Conn, name: str, label: str, version: int, action: Action,
         actor: str | None) -> LabelMove | None:
    """Move ``label`` to ``version`` and record the move; None when it was there."""
    row = conn.execute("SELECT version FROM prompt_labels WHERE name = %s AND label = %s",
                       (name, label)).fetchone()
    before = None if row is None else int(row[0])
    if before == version:
        return None
    now = time.time()
    conn.execute("INSERT INTO prompt_labels (name, label, version, updated_at) "
                 "VALUES (%s, %s, %s, %s) ON CONFLICT (name, label) DO UPDATE SET "
                 "version = excluded.version, updated_at = excluded.updated_at",
                 (name, label, version, now))
    found = conn.execute("INSERT INTO prompt_label_moves (name, label, from_version, "
                         "to_version, action, actor, at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                         "RETURNING id", (name, label, before, version, action, actor,
                                          now)).fetchone()
    assert found is not None
    return LabelMove(id=int(found[0]), name=name, label=label, from_version=before,
                     to_version=version, action=action, actor=actor, at=now)
