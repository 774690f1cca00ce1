-- The quality evaluator's rounds over time: seawall/quality/history.py (same meaning as
-- its SQLite schema). drift_history: One row per round and model x prompt version ('' for none); min_p NULL
-- when no test ran; tests is a JSON object of each test's p-value. Rows older than
-- quality.history_days are deleted as each round is written.
CREATE TABLE drift_history (
    at DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    requests INTEGER NOT NULL,
    min_p DOUBLE PRECISION,
    drifted SMALLINT NOT NULL,
    alpha_each DOUBLE PRECISION NOT NULL,
    tests TEXT NOT NULL,
    PRIMARY KEY (model, prompt_version, at)
);
CREATE INDEX drift_history_at ON drift_history (at);
-- slo_history: each SLO's level, error budget left and burn rate per window (JSON), at
-- most every 5 minutes.
CREATE TABLE slo_history (
    at DOUBLE PRECISION NOT NULL,
    name TEXT NOT NULL,
    current DOUBLE PRECISION,
    budget_remaining DOUBLE PRECISION NOT NULL,
    burn_rates TEXT NOT NULL,
    PRIMARY KEY (name, at)
);
CREATE INDEX slo_history_at ON slo_history (at);
