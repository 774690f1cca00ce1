"""The Postgres schema: versioned migrations from empty and from the previous version."""

from __future__ import annotations

import psycopg
import pytest

from seawall.store.migrate import SchemaError, check, latest_version, migrate, migrations


def test_empty_database_migrates_to_latest_and_check_passes(pg_empty_url: str) -> None:
    with pytest.raises(SchemaError, match="run `seawall migrate`"):
        check(pg_empty_url)
    applied = migrate(pg_empty_url)
    assert len(applied) == latest_version() == len(migrations())
    assert check(pg_empty_url) == latest_version()
    assert migrate(pg_empty_url) == []  # idempotent: nothing left to apply


def test_previous_schema_with_data_moves_forward(pg_empty_url: str) -> None:
    last = latest_version()
    migrate(pg_empty_url, up_to=last - 1)
    with psycopg.connect(pg_empty_url, autocommit=True) as c:
        c.execute("INSERT INTO api_keys (id, name, tenant, key_hash, prefix, created_at) "
                  "VALUES ('k1', 'old', 't', 'h', 'p', 1.0)")
    with pytest.raises(SchemaError, match=f"version {last - 1}, this Seawall needs {last}"):
        check(pg_empty_url)
    assert migrate(pg_empty_url) == [f"{last:04d}_{migrations()[-1].name}"]
    with psycopg.connect(pg_empty_url, autocommit=True) as c:
        row = c.execute("SELECT name FROM api_keys WHERE id = 'k1'").fetchone()
    assert row == ("old",)


def test_newer_schema_is_refused(pg_empty_url: str) -> None:
    migrate(pg_empty_url)
    with psycopg.connect(pg_empty_url, autocommit=True) as c:
        c.execute("INSERT INTO seawall_schema VALUES (%s, 'from_the_future', 0)",
                  (latest_version() + 1,))
    with pytest.raises(SchemaError, match="newer than this Seawall knows"):
        check(pg_empty_url)


def test_two_processes_migrating_at_once_apply_each_step_once(pg_empty_url: str) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate(pg_empty_url), range(4)))
    assert sorted(n for r in results for n in r) == sorted(
        f"{m.version:04d}_{m.name}" for m in migrations())
    with psycopg.connect(pg_empty_url, autocommit=True) as c:
        n = c.execute("SELECT COUNT(*) FROM seawall_schema").fetchone()
    assert n == (latest_version(),)
