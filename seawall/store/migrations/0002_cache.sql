-- The response cache shared by every replica: seawall/cache/pg_store.py.
-- Vectors are MiniLM's 384 dimensions stored as float16 (halfvec, as the
-- embedded store keeps them); cosine HNSW for large scopes, and a partial
-- B-tree on scope for the exact scan of small ones (most scopes are small).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE cache_entries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key BYTEA NOT NULL UNIQUE,
    scope BYTEA NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT,
    text TEXT,
    embedding halfvec(384),
    completion BYTEA NOT NULL,  -- the chat.completion as JSON (orjson), replayed verbatim
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX cache_entries_lru ON cache_entries (last_used_at);
CREATE INDEX cache_entries_expiry ON cache_entries (expires_at);
CREATE INDEX cache_entries_tenant ON cache_entries (tenant, model);
CREATE INDEX cache_entries_prompt_version ON cache_entries (prompt_version)
    WHERE prompt_version IS NOT NULL;
CREATE INDEX cache_entries_scope ON cache_entries (scope) WHERE embedding IS NOT NULL;
CREATE INDEX cache_entries_embedding ON cache_entries
    USING hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64);
