"""A write that fails under lock contention must not leave the embedded
store's connection unable to write for the rest of the process.

sqlite3 keeps the implicit transaction of a failed write open; a read on the
same connection then pins a snapshot in it, and after anyone else writes,
every later write of that connection is refused at once. These tests make
that happen with a second real connection holding the write lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from seawall.store.sqlite import connect


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    return other


@pytest.mark.parametrize("many", [False, True])
async def test_a_store_writes_again_after_a_write_failed_on_a_lock(tmp_path: Path,
                                                                   many: bool) -> None:
    path = tmp_path / "seawall.db"
    db = await connect(path)
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        await db.commit()
        await db.execute("PRAGMA busy_timeout=50")  # fail fast instead of after 5 s

        other = _hold_write_lock(path)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            if many:
                await db.executemany("INSERT INTO t VALUES (?)", [(2,), (3,)])
            else:
                await db.execute("INSERT INTO t VALUES (2)")
        assert not db.in_transaction  # the failed write's transaction ended

        async with db.execute("SELECT COUNT(*) FROM t") as c:  # a read on the connection
            assert (await c.fetchone())[0] == 0
        other.execute("COMMIT")
        other.execute("INSERT INTO t VALUES (4)")  # someone else writes meanwhile
        other.close()

        await db.execute("INSERT INTO t VALUES (5)")  # refused for ever before the fix
        await db.commit()
        async with db.execute("SELECT x FROM t ORDER BY x") as c:
            assert [r[0] for r in await c.fetchall()] == [1, 4, 5]
    finally:
        await db.close()


async def test_an_integrity_error_stays_the_callers_to_handle(tmp_path: Path) -> None:
    """Only operational failures end the transaction: a caller that expects a
    duplicate inside its own transaction keeps what it wrote before."""
    db = await connect(tmp_path / "seawall.db")
    try:
        await db.execute("CREATE TABLE u (k TEXT PRIMARY KEY)")
        await db.commit()
        await db.execute("INSERT INTO u VALUES ('a')")
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute("INSERT INTO u VALUES ('a')")
        assert db.in_transaction
        await db.execute("INSERT INTO u VALUES ('b')")
        await db.commit()
        async with db.execute("SELECT k FROM u ORDER BY k") as c:
            assert [r[0] for r in await c.fetchall()] == ["a", "b"]
    finally:
        await db.close()
