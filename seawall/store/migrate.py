"""Versioned, forward-only schema migrations for the shared Postgres store.

Each migration is a SQL file ``NNNN_name.sql`` in ``migrations/``, applied in
order, each in its own transaction, under an advisory lock so two processes
migrating at once apply every step exactly once. ``seawall migrate`` runs
them; ``seawall serve`` and the other commands check the version and refuse
with a clear message when the database is behind (or ahead of) this code.

Why not Alembic: it would bring SQLAlchemy for what is here a list of SQL
files and one version table; the files are plain SQL a DBA can read and apply.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK = 0x5EA_3A11  # the advisory lock id held while migrating

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS seawall_schema (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""


class SchemaError(Exception):
    """The database's schema does not match this version of Seawall."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {versions}")
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


def current_version(conn: psycopg.Connection) -> int:
    """The version applied to the database (0: none, or no Seawall schema)."""
    row = conn.execute("SELECT to_regclass('seawall_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM seawall_schema").fetchone()
    return int(row[0]) if row else 0


def migrate(url: str, up_to: int | None = None, connect_timeout_s: float = 10.0) -> list[str]:
    """Apply every migration not yet applied (up to ``up_to``); returns their names."""
    target = latest_version() if up_to is None else up_to
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True, connect_timeout=int(connect_timeout_s)) as conn:
        # One migrating process at a time (released when the connection closes).
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        conn.execute(_VERSION_TABLE)
        have = current_version(conn)
        for m in migrations():
            if m.version > target:
                break
            if m.version <= have:
                continue  # applied before (perhaps by another process just now)
            with conn.transaction():
                conn.execute(m.sql.encode())
                conn.execute("INSERT INTO seawall_schema (version, name, applied_at) "
                             "VALUES (%s, %s, %s)", (m.version, m.name, time.time()))
            applied.append(f"{m.version:04d}_{m.name}")
    return applied


def check(url: str, connect_timeout_s: float = 10.0) -> int:
    """The schema version, or SchemaError with what to do when it is not this code's."""
    with psycopg.connect(url, autocommit=True, connect_timeout=int(connect_timeout_s)) as conn:
        have = current_version(conn)
    want = latest_version()
    if have < want:
        raise SchemaError(
            f"the database schema is at version {have}, this Seawall needs {want}: "
            "run `seawall migrate` with the same config (it is safe to run from any "
            "machine, and while other replicas are serving)")
    if have > want:
        raise SchemaError(
            f"the database schema is at version {have}, newer than this Seawall knows "
            f"({want}): upgrade this replica to the version that migrated it")
    return have
