-- Keys, trace records and canary state: the tables of seawall/store/postgres.py.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    rpm INTEGER,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    priority INTEGER,
    cache BOOLEAN,
    tpm INTEGER,
    budget_usd DOUBLE PRECISION,
    budget_period TEXT
);
CREATE INDEX api_keys_name ON api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE traces (
    rowid BIGSERIAL PRIMARY KEY,
    trace_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    tenant TEXT NOT NULL,
    key_id TEXT,
    model TEXT NOT NULL,
    deployment TEXT NOT NULL,
    stream BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    error_type TEXT,
    error_code TEXT,
    error_message TEXT,
    input TEXT,
    output TEXT,
    input_hash TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    usage_estimated BOOLEAN NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    finish_reason TEXT,
    "user" TEXT,
    attempts TEXT,
    degraded TEXT,
    cache TEXT,
    cache_entry BIGINT,
    cache_similarity DOUBLE PRECISION,
    saved_tokens INTEGER NOT NULL DEFAULT 0,
    saved_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    cache_guard TEXT,
    rag TEXT,
    experiment TEXT,
    prompt_version TEXT,
    route TEXT
);
CREATE INDEX traces_tenant_time ON traces (tenant, started_at);
CREATE INDEX traces_model_time ON traces (model, started_at);
CREATE INDEX traces_time ON traces (started_at);

CREATE TABLE experiments (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    -- bumped by every save: a compare-and-set guard for canary steps
    revision BIGINT NOT NULL DEFAULT 0
);
