-- Drift evaluation rounds over time: seawall/quality/drift_history.py (same meaning as its
-- SQLite schema). One row per round and model x prompt version ('' for none); min_p NULL
-- when no test ran; tests is a JSON object of each test's p-value. Rows older than
-- quality.drift.history_days are deleted as each round is written.
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
