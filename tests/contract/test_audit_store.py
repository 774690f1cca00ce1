"""The audit log contract: one suite, run against SQLite and Postgres, for
the async store (the server) and the sync one (the CLI) on the same table."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import psycopg
import pytest

from seawall.audit.model import Actor, AuditEvent, AuditLog, AuditQuery
from seawall.audit.record import Auditor, AuditWriteFailed, CliAuditor
from seawall.store.factory import Stores


@pytest.fixture
async def log(stores: Stores) -> AsyncIterator[AuditLog]:
    s = stores.audit()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


OPERATOR = Actor("master", "master", "operator")


def _ev(action: str = "key.revoke", tenant: str = "acme", **kw: object) -> AuditEvent:
    return AuditEvent(action=action, actor=OPERATOR, tenant=tenant,
                      target=str(kw.pop("target", "key_1")), source="127.0.0.1", **kw)  # type: ignore[arg-type]


async def test_append_then_read_every_field(log: AuditLog) -> None:
    got = await log.append(_ev(before={"revoked_at": None, "name": "é"},
                               after={"revoked_at": 5.0, "nested": [1, {"a": True}]},
                               request_id="req-1"))
    assert got.id is not None and got.at > 0
    [row] = await log.query(AuditQuery())
    assert row == got
    assert (row.action, row.actor, row.tenant, row.target, row.source, row.request_id) == (
        "key.revoke", OPERATOR, "acme", "key_1", "127.0.0.1", "req-1")
    assert row.before == {"revoked_at": None, "name": "é"}
    assert row.after == {"revoked_at": 5.0, "nested": [1, {"a": True}]}


async def test_newest_first_with_filters_and_limit(log: AuditLog) -> None:
    for i, (action, tenant) in enumerate([("key.create", "acme"), ("key.revoke", "acme"),
                                          ("cache.purge", "*"), ("key.revoke", "beta"),
                                          ("collection.delete", "acme")]):
        await log.append(_ev(action, tenant, target=f"t{i}", at=1000.0 + i))
    rows = await log.query(AuditQuery())
    assert [r.target for r in rows] == ["t4", "t3", "t2", "t1", "t0"]
    assert [r.target for r in await log.query(AuditQuery(tenant="acme"))] == ["t4", "t1", "t0"]
    assert [r.target for r in await log.query(AuditQuery(action="key.revoke"))] == ["t3", "t1"]
    assert [r.target for r in await log.query(AuditQuery(action="key.*"))] == ["t3", "t1", "t0"]
    assert [r.target for r in await log.query(AuditQuery(tenant="acme", action="key.*"))] == [
        "t1", "t0"]
    assert [r.target for r in await log.query(AuditQuery(since=1002.0))] == ["t4", "t3", "t2"]
    assert [r.target for r in await log.query(AuditQuery(limit=2))] == ["t4", "t3"]
    page = await log.query(AuditQuery(limit=2, before_id=rows[1].id))
    assert [r.target for r in page] == ["t2", "t1"]


async def test_filter_values_are_data_not_sql(log: AuditLog) -> None:
    await log.append(_ev("key.revoke", "acme"))
    await log.append(_ev("key_x.revoke", "a'; DROP TABLE audit_log; --"))
    assert await log.query(AuditQuery(tenant="' OR '1'='1")) == []
    # A prefix matches only itself: '_' and '%' are not wildcards.
    assert [r.action for r in await log.query(AuditQuery(action="key_.*"))] == []
    assert [r.tenant for r in await log.query(AuditQuery(tenant="a'; DROP TABLE audit_log; --"))
            ] == ["a'; DROP TABLE audit_log; --"]
    assert len(await log.query(AuditQuery())) == 2


async def test_secrets_never_stored(log: AuditLog) -> None:
    await log.append(_ev(before={"key_hash": "abc", "prefix": "sk-sw-abcd", "deep": [
        {"secret": "s", "Authorization": "Bearer x", "ok": 1}]}, after={"api_key": "k"}))
    [row] = await log.query(AuditQuery())
    assert row.before == {"prefix": "sk-sw-abcd", "deep": [{"ok": 1}]}
    assert row.after == {}


async def test_huge_names_and_states_are_cut_not_refused(log: AuditLog) -> None:
    tenant, target = "t" * 5000, "x" * 2_000_000
    await log.append(_ev(tenant=tenant, target=target, after={"blob": "y" * 1_000_000}))
    [row] = await log.query(AuditQuery())
    assert row.tenant == tenant[:1000] and row.target == target[:1000]
    assert row.after is not None and row.after["truncated"] is True
    assert row.after["bytes"] > 1_000_000 and len(row.after["head"]) == 1024
    assert [r.id for r in await log.query(AuditQuery(tenant=tenant[:1000]))] == [row.id]


async def test_rows_cannot_be_changed_or_deleted(stores: Stores, log: AuditLog) -> None:
    await log.append(_ev())
    if stores.pg is not None:
        pool = await stores.pg.pool()
        for sql in ("UPDATE audit_log SET tenant = 'x'", "DELETE FROM audit_log",
                    "TRUNCATE audit_log"):
            async with pool.connection() as conn:
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    await conn.execute(sql)
    else:
        db = sqlite3.connect(stores.settings.db_path)
        try:
            for sql in ("UPDATE audit_log SET tenant = 'x'", "DELETE FROM audit_log"):
                with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                    db.execute(sql)
        finally:
            db.close()
    [row] = await log.query(AuditQuery())
    assert row.tenant == "acme"
    assert not hasattr(log, "delete") and not hasattr(log, "update")


async def test_sync_and_async_faces_share_the_table(stores: Stores, log: AuditLog) -> None:
    sync = stores.audit_sync()
    try:
        cli = CliAuditor(sync)
        first = cli.record("prompt.label", tenant="*", target="p:production",
                           before={"version": 1}, after={"version": 2})
        second = cli.record("prompt.label", tenant="*", target="q:production")
        await log.append(_ev())
        assert first.actor.id.startswith("cli:") and first.source == "cli"
        assert first.request_id == second.request_id  # one command, one id
        async_view = await log.query(AuditQuery(action="prompt.*"))
        assert [(r.target, r.before, r.after) for r in async_view] == [
            ("q:production", None, None), ("p:production", {"version": 1}, {"version": 2})]
        assert [r.action for r in sync.query(AuditQuery())] == [
            "key.revoke", "prompt.label", "prompt.label"]
    finally:
        sync.close()
        if stores.pg is not None:
            stores.pg.close_sync()


async def test_ids_grow_across_writers(stores: Stores, log: AuditLog) -> None:
    other = stores.audit()
    await other.open()
    try:
        ids = [(await (log if i % 2 else other).append(_ev(target=f"t{i}"))).id
               for i in range(6)]
    finally:
        await other.close()
    assert ids == sorted(ids) and len(set(ids)) == 6


async def test_a_failed_write_raises_never_drops(stores: Stores, log: AuditLog,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The table gone under the server: record() fails loudly (an error the
    admin request answers with) and the whole event is in the log."""
    if stores.pg is not None:
        pool = await stores.pg.pool()
        async with pool.connection() as conn:
            await conn.execute("DROP TABLE audit_log")
    else:
        db = sqlite3.connect(stores.settings.db_path)
        db.execute("DROP TABLE audit_log")
        db.commit()
        db.close()
    with pytest.raises(AuditWriteFailed, match="key.revoke was applied"):
        await Auditor(log).append(_ev(target="key_lost"))
    assert "key_lost" in caplog.text and "audit write failed" in caplog.text
