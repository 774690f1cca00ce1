"""Every command on the shared store, with one config file, as an operator
runs them from any machine: migrate, the schema check, doctor, keys, traces,
ingest / collections / search, prompts, experiments, cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import PostgresServer, RedisServer, create_database

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture
def shared(tmp_path: Path, pg_server: PostgresServer, redis_server: RedisServer
           ) -> tuple[Path, str]:
    """A config on a fresh, empty database (nothing migrated yet)."""
    db = create_database(pg_server)
    conf = tmp_path / "seawall.yaml"
    conf.write_text(json.dumps({
        "data_dir": str(tmp_path / "data"),
        "store": {"kind": "postgres", "url": db},
        "redis": {"url": redis_server.url(11)},
        "providers": {"f": {"type": "fake"}},
        "models": {"m": {"provider": "f"}, "m2": {"provider": "f"}},
        "experiments": {"rollout": {"kind": "canary", "model": "m",
                                    "variants": [{"name": "baseline"},
                                                 {"name": "candidate", "model": "m2"}]}},
    }))
    return conf, db


def sw(conf: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "seawall.cli", *args, "-c", str(conf)],
                       capture_output=True, text=True, timeout=180)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def test_every_command_works_on_the_shared_store(shared: tuple[Path, str]) -> None:
    conf, db = shared
    # Before `seawall migrate`: every command and `serve` refuse, saying what to do.
    r = sw(conf, "keys", "list", ok=False)
    assert r.returncode != 0 and "run `seawall migrate`" in r.stderr
    r = subprocess.run([sys.executable, "-m", "seawall.cli", "serve", "-c", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "schema is at version 0" in r.stderr
    r = sw(conf, "migrate", "--check", ok=False)
    assert r.returncode == 1 and "run `seawall migrate`" in r.stderr
    r = sw(conf, "migrate")
    assert "applied 0001_core" in r.stdout and "schema at version" in r.stdout
    assert "already current" in sw(conf, "migrate").stdout
    assert "current" in sw(conf, "migrate", "--check").stdout
    assert "postgres postgresql://postgres@" in sw(conf, "keys", "list").stderr

    doctor = sw(conf, "doctor", "--skip-models", "--offline", "--port", "1", ok=False)
    assert "store" in doctor.stdout and "postgres" in doctor.stdout
    assert "redis" in doctor.stdout and "answers" in doctor.stdout

    secret = sw(conf, "keys", "create", "--name", "ops", "--rpm", "60", "--budget-usd", "5",
                "--budget-period", "month").stdout.strip()
    assert secret.startswith("sk-sw-")
    listed = sw(conf, "keys", "list").stdout
    assert "ops" in listed
    assert "revoked" in sw(conf, "keys", "revoke", "ops").stdout
    assert " ops " not in sw(conf, "keys", "list").stdout
    sw(conf, "traces", "tail", "-n", "5")

    sw(conf, "ingest", str(FIXTURES / "rag" / "handbook.md"), "--collection", "docs")
    assert "docs" in sw(conf, "collections", "list").stdout
    assert "handbook.md" in sw(conf, "collections", "show", "docs").stdout
    hits = json.loads(sw(conf, "search", "docs", "handbook", "--json").stdout)
    assert hits

    sw(conf, "prompts", "push", str(FIXTURES / "prompts"))
    assert "support-answer" in sw(conf, "prompts", "list").stdout

    status = sw(conf, "experiments", "status").stdout
    assert "rollout" in status

    assert "empty" in sw(conf, "cache", "stats").stderr
    assert "purged 0 entries" in sw(conf, "cache", "purge", "--tenant", "acme").stdout


def test_a_newer_schema_is_refused_by_serve(shared: tuple[Path, str]) -> None:
    import psycopg

    conf, db = shared
    sw(conf, "migrate")
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("INSERT INTO seawall_schema VALUES (999, 'from_the_future', 0)")
    r = subprocess.run([sys.executable, "-m", "seawall.cli", "serve", "-c", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "newer than this Seawall knows" in r.stderr


