-- Alert state of quality SLOs and drift: seawall/quality/slo_store.py (same meaning as
-- its SQLite schema). One row per alert key; a firing alert is not sent again, and a
-- restart resolves what it finds firing once the condition is gone.
CREATE TABLE quality_alerts (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    detail TEXT NOT NULL,
    fired_at DOUBLE PRECISION NOT NULL,
    resolved_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL
);
