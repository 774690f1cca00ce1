-- The console overview's deployment / key / user breakdowns
-- (seawall/console/rollup.py fold_dims): sums per (hour, tenant, dimension,
-- value), at most DIM_CAP values per (hour, tenant, dimension), the rest in
-- '(other)'. SQLite creates the same at open.
CREATE TABLE trace_rollup_dim (
    hour DOUBLE PRECISION NOT NULL,
    tenant TEXT NOT NULL,
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (hour, tenant, dim, value)
);
CREATE INDEX trace_rollup_dim_by_tenant ON trace_rollup_dim (tenant, hour);
