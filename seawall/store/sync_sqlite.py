"""A SQLite file driven synchronously, for stores whose callers already run
on worker threads (RAG ingestion and search, the prompt registry) or in the
CLI without an event loop. One connection per store guarded by a lock; WAL
lets other processes read while one writes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SyncSqlite"]


class SyncSqlite:
    """Subclasses set ``SCHEMA`` (run on open) and may override
    :meth:`_on_write` (run inside every write transaction, before commit)."""

    SCHEMA = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def open(self) -> SyncSqlite:
        with self._lock:
            if self._db is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=10000")
                db.execute("PRAGMA foreign_keys=ON")
                db.executescript(self.SCHEMA)
                self._db = db
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def _on_write(self, db: sqlite3.Connection) -> None:
        """Hook: runs at the end of every write transaction."""

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so two writers queue instead of failing."""
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                self._on_write(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
