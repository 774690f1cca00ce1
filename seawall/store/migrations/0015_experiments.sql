-- The quality loop (seawall/quality/loop.py): a cached answer remembers the
-- request that produced it (so feedback or a judge score on that request finds
-- it), and a quarantined entry keeps its row, marked with why, until it is
-- released (`seawall cache release ID`) or expires. The SQLite twin is added at
-- open by seawall/cache/sqlite_store.py.
ALTER TABLE cache_entries ADD COLUMN trace_id TEXT;
ALTER TABLE cache_entries ADD COLUMN quarantined TEXT;
ALTER TABLE cache_entries ADD COLUMN quarantined_at DOUBLE PRECISION;
CREATE INDEX cache_entries_trace ON cache_entries (trace_id) WHERE trace_id IS NOT NULL;
