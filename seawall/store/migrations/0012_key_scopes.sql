-- Roles, scopes, expiry and rotation of keys; tenants' budgets set from the CLI
-- (docs/security.md). Lists are JSON text, as in the SQLite store.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'app';
ALTER TABLE api_keys ADD COLUMN scopes TEXT;  -- NULL: a key made before scopes existed
ALTER TABLE api_keys ADD COLUMN models TEXT;
ALTER TABLE api_keys ADD COLUMN collections_read TEXT;
ALTER TABLE api_keys ADD COLUMN collections_write TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at DOUBLE PRECISION;
-- Rotation: the previous secret's hash, valid until prev_expires_at.
ALTER TABLE api_keys ADD COLUMN prev_hash TEXT;
ALTER TABLE api_keys ADD COLUMN prev_expires_at DOUBLE PRECISION;
ALTER TABLE api_keys ADD COLUMN budget_reset_at DOUBLE PRECISION;
CREATE INDEX api_keys_prev_hash ON api_keys (prev_hash) WHERE prev_hash IS NOT NULL;
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE tenant_budgets (
    tenant TEXT PRIMARY KEY,
    budget_usd DOUBLE PRECISION,
    budget_period TEXT NOT NULL,
    reset_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL
);
