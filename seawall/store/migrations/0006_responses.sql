-- Stored responses (the OpenAI Responses API): seawall/responses/pg_store.py.
-- One row per response; a conversation is the chain of previous_response_id.
-- JSON columns are text (the gateway reads them whole, never queries inside).
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    previous_response_id TEXT,
    instructions TEXT,
    input_items TEXT NOT NULL,
    output TEXT NOT NULL,
    usage TEXT,
    metadata TEXT,
    extra TEXT NOT NULL,
    tokens INTEGER  -- the turn's tokens, counted once when stored (trimming reads them)
);
CREATE INDEX responses_expiry ON responses (expires_at) WHERE expires_at IS NOT NULL;
