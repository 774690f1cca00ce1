-- Prompt versions, labels and every label move: seawall/prompts/pg_store.py.
-- Prompts are global (operator configuration), not per tenant.
CREATE TABLE prompt_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    content TEXT NOT NULL,
    author TEXT,
    source TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE prompt_labels (
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, label),
    FOREIGN KEY (name, version) REFERENCES prompt_versions (name, version)
);

CREATE TABLE prompt_label_moves (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX prompt_label_moves_label ON prompt_label_moves (name, label, id);

-- One counter moved by every write (and locked by it: prompt writes are rare
-- and serialised), read by every replica to drop what it cached.
CREATE TABLE prompt_meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO prompt_meta (key, value) VALUES ('generation', 0);
