"""The shared store: keys, trace records and canary state in Postgres.

Many ``seawall serve`` replicas and workers use one database. Trace records
arrive in batches from each process's writer (observe/writer.py) and go in
with COPY into a per-connection staging table, then one INSERT ... ON
CONFLICT DO NOTHING: COPY's speed, and a record replayed from a journal
after a crash is never stored twice. Retention deletes in small batches by
time, so it never holds locks writers wait on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from seawall.observe.records import ROW_COLUMNS, TraceRecord
from seawall.store.base import KEY_COLUMNS, ApiKey, TenantBudget, key_changes, key_of, key_row
from seawall.store.pg import Postgres, no_nul_row

_COLUMNS = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
_STAGING = ("CREATE TEMP TABLE IF NOT EXISTS traces_in ON COMMIT DELETE ROWS AS "
            f"SELECT {_COLUMNS} FROM traces WITH NO DATA")
_COPY = f"COPY traces_in ({_COLUMNS}) FROM STDIN"
_MOVE = (f"INSERT INTO traces ({_COLUMNS}) SELECT {_COLUMNS} FROM traces_in "
         "ON CONFLICT (trace_id) DO NOTHING")
_RETENTION_BATCH = 5000


_key = key_of
_INSERT_KEY = (f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) "
               f"VALUES ({', '.join('%s' for _ in KEY_COLUMNS)})")


class PostgresStore:
    """Implements :class:`seawall.store.base.Store` on the shared database."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def open_reader(self) -> None:
        await self.pg.pool()  # one pool: a lookup takes any free connection

    async def close(self) -> None:
        """The pools belong to :class:`Postgres`, closed by the factory."""

    async def ping(self) -> None:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        pool = await self.pg.pool()
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())

    # -- keys --
    async def create_key(self, key: ApiKey) -> None:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            await conn.execute(_INSERT_KEY, key_row(key))

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        rows = await self._fetch("SELECT * FROM api_keys WHERE key_hash = %s UNION ALL "
                                 "SELECT * FROM api_keys WHERE prev_hash = %s LIMIT 1",
                                 (key_hash, key_hash))
        return _key(rows[0]) if rows else None

    async def list_keys(self, include_revoked: bool = False,
                        tenant: str | None = None) -> list[ApiKey]:
        where, args = [], []
        if not include_revoked:
            where.append("revoked_at IS NULL")
        if tenant is not None:
            where.append("tenant = %s")
            args.append(tenant)
        sql = "SELECT * FROM api_keys" + (" WHERE " + " AND ".join(where) if where else "")
        return [_key(r) for r in await self._fetch(sql + " ORDER BY created_at", tuple(args))]

    @staticmethod
    def _matching_sql(by: str, tenant: str | None, include_revoked: bool,
                      lock: bool = False) -> str:
        sql = f"SELECT * FROM api_keys WHERE {by} = %s"
        if tenant is not None:
            sql += " AND tenant = %s"
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        return sql + (" FOR UPDATE" if lock else "")

    async def _matching(self, cur: Any, id_or_name: str, tenant: str | None,
                        include_revoked: bool, lock: bool = False) -> list[dict[str, Any]]:
        args = (id_or_name,) if tenant is None else (id_or_name, tenant)
        await cur.execute(self._matching_sql("id", tenant, include_revoked, lock), args)
        rows = list(await cur.fetchall())
        if not rows:
            await cur.execute(self._matching_sql("name", tenant, include_revoked, lock), args)
            rows = list(await cur.fetchall())
        return rows

    async def find_key(self, id_or_name: str, tenant: str | None = None,
                       include_revoked: bool = False) -> ApiKey | None:
        pool = await self.pg.pool()
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = await self._matching(cur, id_or_name, tenant, include_revoked)
        if len(rows) > 1:
            raise ValueError(f"{len(rows)} {'' if include_revoked else 'active '}keys are "
                             f"named {id_or_name!r}; use the id instead")
        return _key(rows[0]) if rows else None

    async def revoke_key(self, id_or_name: str, tenant: str | None = None) -> ApiKey | None:
        pool = await self.pg.pool()
        async with pool.connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as cur:
            rows = await self._matching(cur, id_or_name, tenant, False, lock=True)
            if len(rows) != 1:
                if len(rows) > 1:
                    raise ValueError(f"{len(rows)} active keys are named {id_or_name!r}; "
                                     "revoke by id instead")
                return None
            now = time.time()
            await cur.execute("UPDATE api_keys SET revoked_at = %s WHERE id = %s",
                              (now, rows[0]["id"]))
        return _key({**rows[0], "revoked_at": now})

    async def rotate_key(self, key_id: str, key_hash: str, prefix: str,
                         old_valid_until: float) -> ApiKey | None:
        rows = await self._fetch(
            "UPDATE api_keys SET prev_hash = key_hash, prev_expires_at = %s, key_hash = %s, "
            "prefix = %s WHERE id = %s AND revoked_at IS NULL RETURNING *",
            (old_valid_until, key_hash, prefix, key_id))
        return _key(rows[0]) if rows else None

    async def update_key(self, key_id: str, **changes: Any) -> ApiKey | None:
        cols = key_changes(changes)
        if not cols:
            return await self.find_key(key_id, include_revoked=True)
        sets = ", ".join(f"{c} = %s" for c in cols)
        rows = await self._fetch(f"UPDATE api_keys SET {sets} WHERE id = %s RETURNING *",
                                 (*cols.values(), key_id))
        return _key(rows[0]) if rows else None

    async def tenant_budget(self, tenant: str) -> TenantBudget | None:
        rows = await self._fetch("SELECT * FROM tenant_budgets WHERE tenant = %s", (tenant,))
        return TenantBudget(**rows[0]) if rows else None

    async def tenant_budgets(self) -> list[TenantBudget]:
        return [TenantBudget(**r)
                for r in await self._fetch("SELECT * FROM tenant_budgets ORDER BY tenant")]

    async def set_tenant_budget(self, budget: TenantBudget) -> None:
        await self._fetch(
            "INSERT INTO tenant_budgets (tenant, budget_usd, budget_period, reset_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant) DO UPDATE SET budget_usd = "
            "excluded.budget_usd, budget_period = excluded.budget_period, reset_at = "
            "excluded.reset_at, updated_at = excluded.updated_at RETURNING tenant",
            (budget.tenant, budget.budget_usd, budget.budget_period, budget.reset_at,
             budget.updated_at))

    # -- traces --
    async def write_traces(self, records: list[TraceRecord]) -> None:
        """One batch, on a thread: turning records into rows and COPY's encoding
        grow with the batch and must not hold the event loop (bench/trace_ingest.py)."""
        await asyncio.to_thread(self._write_traces, records)

    def _write_traces(self, records: list[TraceRecord]) -> None:
        try:
            self._copy_traces(records, lambda row: row)
        except psycopg.DataError:
            # A NUL in a field (any client can send one in a model name or
            # user): Postgres text cannot hold it. Rare, so checked only now.
            self._copy_traces(records, no_nul_row)

    def _copy_traces(self, records: list[TraceRecord],
                     clean: Callable[[tuple[Any, ...]], tuple[Any, ...]]) -> None:
        with self.pg.sync_pool().connection() as conn, conn.transaction():
            conn.execute(_STAGING)
            with conn.cursor().copy(_COPY) as copy:
                for r in records:
                    copy.write_row(clean(r.row()))
            conn.execute(_MOVE)

    async def recent_traces(self, limit: int = 20, after_rowid: int = 0) -> list[dict[str, Any]]:
        if after_rowid:
            return await self._fetch(
                "SELECT * FROM traces WHERE rowid > %s ORDER BY rowid LIMIT %s",
                (after_rowid, limit))
        return await self._fetch(
            "SELECT * FROM (SELECT * FROM traces ORDER BY rowid DESC LIMIT %s) t ORDER BY rowid",
            (limit,))

    async def spent_since(self, tenant: str, key_id: str | None, since: float) -> float:
        """USD spent by ``tenant`` (or its key ``key_id``) since ``since``, from
        the trace records: where a budget Redis does not hold starts from."""
        sql = "SELECT COALESCE(SUM(cost_usd), 0) AS usd FROM traces WHERE tenant = %s " \
              "AND started_at >= %s"
        args: list[Any] = [tenant, since]
        if key_id is not None:
            sql += " AND key_id = %s"
            args.append(key_id)
        rows = await self._fetch(sql, tuple(args))
        return float(rows[0]["usd"]) if rows else 0.0

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT * FROM traces WHERE trace_id = %s", (trace_id,))
        return rows[0] if rows else None

    async def delete_traces_before(self, started_before: float,
                                   batch: int = _RETENTION_BATCH) -> int:
        """Retention: delete records older than a time, a batch per statement
        (short transactions: writers and readers never wait long on it)."""
        pool = await self.pg.pool()
        total = 0
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "DELETE FROM traces WHERE rowid IN (SELECT rowid FROM traces "
                    "WHERE started_at < %s ORDER BY started_at LIMIT %s)",
                    (started_before, batch))
                total += cur.rowcount
            if cur.rowcount < batch:
                return total

    # -- experiments --
    async def experiment_states(self) -> dict[str, dict[str, Any]]:
        rows = await self._fetch("SELECT name, state FROM experiments")
        # Rows named _seawall* are internal (the arm salt): never listed.
        return {r["name"]: orjson.loads(r["state"]) for r in rows
                if not r["name"].startswith("_seawall")}

    async def experiment_state(self, name: str) -> tuple[dict[str, Any] | None, int]:
        rows = await self._fetch("SELECT state, revision FROM experiments WHERE name = %s",
                                 (name,))
        return (None, 0) if not rows else (orjson.loads(rows[0]["state"]), rows[0]["revision"])

    async def save_experiment_state(self, name: str, state: dict[str, Any],
                                    expect_revision: int | None = None) -> int | None:
        """Save; with ``expect_revision``, only if the stored revision is that one
        (compare-and-set: two replicas never both move a canary step). Returns
        the new revision, or None when the compare failed."""
        blob, now = orjson.dumps(state).decode(), time.time()
        if expect_revision is None:
            sql = ("INSERT INTO experiments (name, state, updated_at, revision) "
                   "VALUES (%s, %s, %s, 1) ON CONFLICT (name) DO UPDATE SET state = "
                   "excluded.state, updated_at = excluded.updated_at, "
                   "revision = experiments.revision + 1 RETURNING revision")
            args: tuple[Any, ...] = (name, blob, now)
        elif expect_revision == 0:  # none saved yet
            sql = ("INSERT INTO experiments (name, state, updated_at, revision) "
                   "VALUES (%s, %s, %s, 1) ON CONFLICT (name) DO UPDATE SET state = "
                   "excluded.state, updated_at = excluded.updated_at, revision = 1 "
                   "WHERE experiments.revision = 0 RETURNING revision")
            args = (name, blob, now)
        else:
            sql = ("UPDATE experiments SET state = %s, updated_at = %s, "
                   "revision = revision + 1 WHERE name = %s AND revision = %s "
                   "RETURNING revision")
            args = (blob, now, name, expect_revision)
        rows = await self._fetch(sql, args)
        return None if not rows else int(rows[0]["revision"])
