"""The prompt store: versions, labels and every label move, in a SQLite file
of its own (default ``<data_dir>/prompts.db``).

Versions are immutable rows; a label is a pointer row; each move of a label
is appended to ``prompt_label_moves``, which is what ``rollback`` walks back.
Every write bumps one ``generation`` counter in the same transaction, so a
server reads that single row per request and drops what it cached when
another process (``seawall prompts rollback`` beside it) changed anything.

Prompts are global, not per tenant: they are operator-managed configuration,
like models and routes, and a request names them the same way from every
tenant. There is deliberately no ``tenant`` column; per-tenant prompts, if
ever needed, would be a new key column and a migration, not a reinterpretation.

Plain ``sqlite3`` (as RagStore): the CLI uses the same code without an event
loop, and the server's per-request work is one primary-key read of a tiny
row, cheaper than a hop to a thread. One connection per store, guarded by a
lock; WAL lets the server read while a CLI writes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from seawall.prompts.errors import LabelError, PromptNotFound
from seawall.prompts.model import LabelMove, PromptSpec, PromptVersion
from seawall.store.sync_sqlite import SyncSqlite

__all__ = ["PromptSummary", "PushOutcome", "SqlitePromptStore", "undo_target"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompt_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    content TEXT NOT NULL,
    author TEXT,
    source TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS prompt_labels (
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (name, label),
    FOREIGN KEY (name, version) REFERENCES prompt_versions (name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS prompt_label_moves (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS prompt_label_moves_label ON prompt_label_moves (name, label, id);
CREATE TABLE IF NOT EXISTS prompt_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO prompt_meta (key, value) VALUES ('generation', 0);
"""


@dataclass(frozen=True, slots=True)
class PromptSummary:
    name: str
    latest: int
    versions: int
    updated_at: float
    labels: dict[str, int]


@dataclass(frozen=True, slots=True)
class PushOutcome:
    version: PromptVersion
    created: bool  # False: the content equals the latest version's
    moves: list[LabelMove]


def _version(row: sqlite3.Row | dict[str, Any]) -> PromptVersion:
    return PromptVersion(
        name=row["name"], version=row["version"],
        spec=PromptSpec.from_dict(orjson.loads(row["content"])),
        content_hash=row["content_hash"], created_at=row["created_at"],
        author=row["author"], source=row["source"])


def _move(row: sqlite3.Row | dict[str, Any]) -> LabelMove:
    return LabelMove(id=row["id"], name=row["name"], label=row["label"],
                     from_version=row["from_version"], to_version=row["to_version"],
                     action=row["action"], actor=row["actor"], at=row["at"])


class SqlitePromptStore(SyncSqlite):
    """Every prompt's versions, labels and label history, in one SQLite file
    (the embedded backend of :class:`seawall.prompts.store_api.PromptStore`)."""

    SCHEMA = _SCHEMA
    remote = False

    def open(self) -> SqlitePromptStore:
        super().open()
        return self

    def _on_write(self, db: sqlite3.Connection) -> None:
        """Every change moves the generation, so other processes notice it."""
        db.execute("UPDATE prompt_meta SET value = value + 1 WHERE key = 'generation'")

    def generation(self) -> int:
        """Moves on every change by any process: checked before every lookup."""
        with self._lock:
            row = self.db.execute(
                "SELECT value FROM prompt_meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def peek_generation(self) -> int | None:
        """A local file: reading it is the cheap way to know."""
        return self.generation()

    # Reads.

    def version(self, name: str, version: int) -> PromptVersion | None:
        with self._lock:
            row = self.db.execute("SELECT * FROM prompt_versions WHERE name = ? AND version = ?",
                                  (name, version)).fetchone()
        return _version(row) if row else None

    def latest(self, name: str) -> PromptVersion | None:
        with self._lock:
            row = self.db.execute("SELECT * FROM prompt_versions WHERE name = ? "
                                  "ORDER BY version DESC LIMIT 1", (name,)).fetchone()
        return _version(row) if row else None

    def label_version(self, name: str, label: str) -> int | None:
        with self._lock:
            row = self.db.execute("SELECT version FROM prompt_labels WHERE name = ? AND label = ?",
                                  (name, label)).fetchone()
        return None if row is None else int(row[0])

    def labels(self, name: str) -> dict[str, int]:
        with self._lock:
            rows = self.db.execute("SELECT label, version FROM prompt_labels WHERE name = ? "
                                   "ORDER BY label", (name,)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def versions(self, name: str) -> list[PromptVersion]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM prompt_versions WHERE name = ? "
                                   "ORDER BY version", (name,)).fetchall()
        return [_version(r) for r in rows]

    def moves(self, name: str, label: str | None = None) -> list[LabelMove]:
        sql = "SELECT * FROM prompt_label_moves WHERE name = ?"
        args: list[str] = [name]
        if label is not None:
            sql += " AND label = ?"
            args.append(label)
        with self._lock:
            return [_move(r) for r in self.db.execute(sql + " ORDER BY id", args).fetchall()]

    def summaries(self) -> list[PromptSummary]:
        with self._lock:
            rows = self.db.execute(
                "SELECT name, MAX(version) AS latest, COUNT(*) AS versions, "
                "MAX(created_at) AS updated_at FROM prompt_versions GROUP BY name "
                "ORDER BY name").fetchall()
            labels = self.db.execute("SELECT name, label, version FROM prompt_labels "
                                     "ORDER BY name, label").fetchall()
        by_name: dict[str, dict[str, int]] = {}
        for r in labels:
            by_name.setdefault(r[0], {})[r[1]] = int(r[2])
        return [PromptSummary(r["name"], r["latest"], r["versions"], r["updated_at"],
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
        with self._write() as db:
            row = db.execute("SELECT version, content_hash FROM prompt_versions WHERE name = ? "
                             "ORDER BY version DESC LIMIT 1", (name,)).fetchone()
            created = row is None or row["content_hash"] != content_hash
            number = 1 if row is None else int(row["version"]) + (1 if created else 0)
            if created:
                db.execute(
                    "INSERT INTO prompt_versions (name, version, content_hash, content, author, "
                    "source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, number, content_hash, orjson.dumps(spec.to_dict()).decode(), author,
                     source, now))
            wanted = [*labels, *(label_new if row is None else ())]
            moves = [m for label in dict.fromkeys(wanted)
                     if (m := self._move(db, name, label, number, "push", author)) is not None]
            stored = db.execute("SELECT * FROM prompt_versions WHERE name = ? AND version = ?",
                                (name, number)).fetchone()
        return PushOutcome(_version(stored), created, moves)

    def set_label(self, name: str, label: str, version: int,
                  actor: str | None = None) -> LabelMove | None:
        """Point ``label`` at ``version``; None when it already did."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM prompt_versions WHERE name = ? AND version = ?",
                          (name, version)).fetchone() is None:
                raise PromptNotFound(f"Prompt {name!r} has no version {version}.",
                                     param="version")
            return self._move(db, name, label, version, "label", actor)

    def rollback(self, name: str, label: str, actor: str | None = None) -> LabelMove:
        """Undo the label's latest move that is not already undone: moves are
        a stack, each rollback pops one, so rolling back twice goes two steps
        back (it does not toggle between the last two versions)."""
        with self._write() as db:
            rows = db.execute("SELECT * FROM prompt_label_moves WHERE name = ? AND label = ? "
                              "ORDER BY id", (name, label)).fetchall()
            top = undo_target(name, label, [_move(r) for r in rows])
            assert top.from_version is not None
            move = self._move(db, name, label, top.from_version, "rollback", actor)
            assert move is not None  # the label points at top.to_version, not from_version
            return move

    @staticmethod
    def _move(db: sqlite3.Connection, name: str, label: str, version: int, action: str,
              actor: str | None) -> LabelMove | None:
        row = db.execute("SELECT version FROM prompt_labels WHERE name = ? AND label = ?",
                         (name, label)).fetchone()
        before = None if row is None else int(row[0])
        if before == version:
            return None
        now = time.time()
        db.execute("INSERT INTO prompt_labels (name, label, version, updated_at) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (name, label) DO UPDATE SET "
                   "version = excluded.version, updated_at = excluded.updated_at",
                   (name, label, version, now))
        cur = db.execute("INSERT INTO prompt_label_moves (name, label, from_version, to_version, "
                         "action, actor, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (name, label, before, version, action, actor, now))
        return LabelMove(id=int(cur.lastrowid or 0), name=name, label=label,
                         from_version=before, to_version=version,
                         action=action,  # type: ignore[arg-type]
                         actor=actor, at=now)


def undo_target(name: str, label: str, moves: Sequence[LabelMove]) -> LabelMove:
    """The move a rollback undoes, given the label's moves in order: moves are
    a stack, each rollback pops one. Raises when there is nothing to undo."""
    stack: list[LabelMove] = []
    for m in moves:
        if m.action == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(m)
    if not stack:
        if not moves:
            raise PromptNotFound(f"Prompt {name!r} has no label {label!r}.", param="label")
        raise LabelError(f"{name}: label {label} has no earlier move left to undo")
    top = stack[-1]
    if top.from_version is None:
        raise LabelError(f"{name}: label {label} was created at version {top.to_version}; "
                         "there is no earlier version to roll back to")
    return top
