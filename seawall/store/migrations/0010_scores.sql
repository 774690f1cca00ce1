-- Judge scores of answers: seawall/quality/score_store.py (same meaning as its SQLite
-- schema). One row per (answer, judge, rubric); score is NULL when the judge failed.
CREATE TABLE quality_scores (
    trace_id TEXT NOT NULL,
    judge TEXT NOT NULL,
    rubric TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    judge_model TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT,
    prompt_version TEXT,
    experiment TEXT,
    score DOUBLE PRECISION,
    scale_max DOUBLE PRECISION NOT NULL,
    reasoning TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trace_id, judge, rubric)
);
CREATE INDEX quality_scores_time ON quality_scores (created_at);
CREATE INDEX quality_scores_model_time ON quality_scores (model, created_at);
CREATE INDEX quality_scores_tenant_time ON quality_scores (tenant, created_at);
