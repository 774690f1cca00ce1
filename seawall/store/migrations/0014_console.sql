-- The web console (seawall/console/): an index for the error-filtered trace
-- list, and hourly rollups of the trace records for the overview
-- (seawall/console/rollup.py). SQLite creates the same at open.
CREATE INDEX traces_errors_time ON traces (started_at) WHERE status >= 400;

CREATE TABLE trace_rollup (
    hour DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    tenant TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    latency TEXT NOT NULL,
    ttft TEXT NOT NULL,
    PRIMARY KEY (hour, model, tenant)
);
CREATE INDEX trace_rollup_by_tenant ON trace_rollup (tenant, hour);

-- The same over all tenants, per (hour, model): the operator's totals and models.
CREATE TABLE trace_rollup_model (
    hour DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    latency TEXT NOT NULL,
    ttft TEXT NOT NULL,
    PRIMARY KEY (hour, model)
);

-- Sums only, per (hour, tenant): the operator's table by tenant.
CREATE TABLE trace_rollup_tenant (
    hour DOUBLE PRECISION NOT NULL,
    tenant TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    cache_hits BIGINT NOT NULL,
    saved_usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (hour, tenant)
);

-- How far the rollup has folded: every hour before `upto` is in trace_rollup.
CREATE TABLE trace_rollup_state (
    name TEXT PRIMARY KEY,
    upto DOUBLE PRECISION NOT NULL
);
