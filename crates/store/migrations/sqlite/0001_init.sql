-- Tenants, keys and the receipt chain. Timestamps are unix milliseconds (UTC).
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL,
    attributes  TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT,
    role          TEXT NOT NULL,
    user_id       TEXT,
    scopes        TEXT NOT NULL DEFAULT '[]',
    secret_hash   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    rotated_at    INTEGER,
    last_used_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

-- One row per tenant: the head of its receipt chain. Updated in the same transaction
-- that appends, so the chain cannot fork.
CREATE TABLE chain_heads (
    tenant_id  TEXT PRIMARY KEY NOT NULL,
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL
);

-- Receipts are never updated in place. Receipts outlive their tenant row (audit).
CREATE TABLE receipts (
    tenant_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    decision    TEXT NOT NULL,
    key_id      TEXT,
    user_id     TEXT,
    model       TEXT,
    hash        TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX receipts_tenant_time ON receipts(tenant_id, created_at);

-- Per-tenant data key (wrapped by the master key). HMAC and encryption keys for the
-- tenant's receipts derive from it; deleting the row crypto-shreds the tenant.
CREATE TABLE tenant_keys (
    tenant_id    TEXT PRIMARY KEY NOT NULL,
    wrapped_key  TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
