-- Feedback on answers (POST /v1/feedback): seawall/quality/feedback_store.py.
-- One row per (answer, user): a user's second rating replaces the first.
-- user_id is '' when the client named no user; categories is a JSON list.
CREATE TABLE feedback (
    trace_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key_id TEXT,
    score DOUBLE PRECISION NOT NULL,
    comment TEXT,
    categories TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trace_id, user_id)
);
CREATE INDEX feedback_tenant_time ON feedback (tenant, updated_at);
