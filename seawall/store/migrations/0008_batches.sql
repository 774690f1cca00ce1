-- Files and batches (the OpenAI Files and Batch APIs): seawall/batches/pg_store.py.
-- File contents are rows of 1 MB bytea chunks: streamed in and out a chunk at a
-- time, deleted with their file (ON DELETE CASCADE), and copied by pg_dump and
-- replication like any row -- unlike large objects, which need lo_unlink or
-- vacuumlo to be freed and their own permissions.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX files_tenant ON files (tenant, created_at);
CREATE TABLE file_chunks (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (file_id, seq)
);
-- Pieces of an upload under way: moved to file_chunks when it is whole.
CREATE TABLE file_uploads (
    upload_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (upload_id, seq)
);
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata JSONB,
    auth JSONB NOT NULL,
    errors JSONB,
    output_file_id TEXT,
    error_file_id TEXT,
    total INTEGER NOT NULL,
    completed INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    in_progress_at DOUBLE PRECISION,
    finalizing_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    failed_at DOUBLE PRECISION,
    cancelling_at DOUBLE PRECISION,
    cancelled_at DOUBLE PRECISION,
    expires_at DOUBLE PRECISION
);
CREATE INDEX batches_tenant ON batches (tenant, created_at);
-- One outcome per (batch, line), written once: a restarted batch skips these.
CREATE TABLE batch_lines (
    batch_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    custom_id TEXT,
    ok BOOLEAN NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (batch_id, line)
);
CREATE TABLE batch_custom_ids (
    batch_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);
