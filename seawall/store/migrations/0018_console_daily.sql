-- The console overview, complete over 7 and 30 days (seawall/console/rollup.py):
-- latency / time-to-first-token histograms in the per-tenant and deployment /
-- key / user rollups ('' in the hours folded before: no percentiles there);
-- the routing shares per (hour, tenant, route, model) with what the same
-- requests would have cost on the route's strongest tier; and a daily table
-- beside each hourly one, folded from its 24 hours. Every rollup table has the
-- same columns (rollup.py SUM_COLUMNS, HIST_COLUMNS); SQLite creates the same
-- at open, and tests/contract/test_console_queries.py checks they agree.
ALTER TABLE trace_rollup_tenant ADD COLUMN latency TEXT NOT NULL DEFAULT '',
    ADD COLUMN ttft TEXT NOT NULL DEFAULT '';
ALTER TABLE trace_rollup_dim ADD COLUMN latency TEXT NOT NULL DEFAULT '',
    ADD COLUMN ttft TEXT NOT NULL DEFAULT '';
CREATE INDEX trace_rollup_tenant_by_tenant ON trace_rollup_tenant (tenant, hour);

CREATE TABLE trace_rollup_route (
    hour DOUBLE PRECISION NOT NULL,
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    strong_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency TEXT NOT NULL DEFAULT '',
    ttft TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (hour, tenant, route, model)
);
CREATE INDEX trace_rollup_route_by_tenant ON trace_rollup_route (tenant, hour);

CREATE TABLE trace_rollup_day (
    day DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    tenant TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    latency TEXT NOT NULL DEFAULT '',
    ttft TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (day, model, tenant)
);
CREATE INDEX trace_rollup_day_by_tenant ON trace_rollup_day (tenant, day);

CREATE TABLE trace_rollup_model_day (
    day DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    latency TEXT NOT NULL DEFAULT '',
    ttft TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (day, model)
);

CREATE TABLE trace_rollup_tenant_day (
    day DOUBLE PRECISION NOT NULL,
    tenant TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    latency TEXT NOT NULL DEFAULT '',
    ttft TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (day, tenant)
);
CREATE INDEX trace_rollup_tenant_day_by_tenant ON trace_rollup_tenant_day (tenant, day);

CREATE TABLE trace_rollup_dim_day (
    day DOUBLE PRECISION NOT NULL,
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
    latency TEXT NOT NULL DEFAULT '',
    ttft TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (day, tenant, dim, value)
);
CREATE INDEX trace_rollup_dim_day_by_tenant ON trace_rollup_dim_day (tenant, day);

CREATE TABLE trace_rollup_route_day (
    day DOUBLE PRECISION NOT NULL,
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    strong_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency TEXT NOT NULL DEFAULT '',
    ttft TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (day, tenant, route, model)
);
CREATE INDEX trace_rollup_route_day_by_tenant ON trace_rollup_route_day (tenant, day);
