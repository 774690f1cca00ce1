-- The durable job queue shared by every replica and worker: seawall/jobs/pg_queue.py.
-- Claims take rows in (priority, created_at) order with FOR UPDATE SKIP LOCKED
-- from the partial index of queued jobs; lapsed leases are found by the
-- partial index of running ones; depth limits count the active jobs per tenant.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload JSONB NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN
        ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_after DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    result JSONB,
    error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX jobs_claim ON jobs (priority, created_at) WHERE state = 'queued';
CREATE INDEX jobs_lapse ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_active_tenant ON jobs (tenant) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_created ON jobs (created_at);
-- A queue table churns (every job is inserted and updated a few times):
-- vacuum and analyze it far more often than the defaults, so dead tuples do
-- not pile up in the claim index and the planner keeps its index-ordered plan.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.01,
                      autovacuum_analyze_scale_factor = 0.02,
                      autovacuum_vacuum_cost_delay = 0);
