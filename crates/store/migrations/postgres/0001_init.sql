-- Tenants, keys and the receipt chain (mirrors sqlite/0001_init.sql). Timestamps are unix
-- milliseconds (UTC) in BIGINT so the model types are the same on both backends. Key
-- columns use the "C" collation so ordering and cursors match SQLite (byte order)
-- whatever the database's default collation is. JSON columns use `json`, not `jsonb`:
-- `json` keeps the text exactly (key order, escapes), so API output is identical to
-- SQLite's, and operators can still query it (`attributes->>'domain'`).
CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL,
    attributes  JSON NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant_id     TEXT COLLATE "C" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT,
    role          TEXT NOT NULL,
    user_id       TEXT,
    scopes        JSON NOT NULL DEFAULT '[]',
    secret_hash   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    rotated_at    BIGINT,
    last_used_at  BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

-- One row per tenant: the head of its receipt chain. Locked (SELECT ... FOR UPDATE) and
-- advanced in the transaction that appends, so writers on any number of gateway
-- processes serialise per tenant and the chain cannot fork.
CREATE TABLE chain_heads (
    tenant_id  TEXT COLLATE "C" PRIMARY KEY,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL
);

-- Receipts are never updated in place. Receipts outlive their tenant row (audit), so
-- there is no foreign key to tenants. `body` is the receipt's JSON as TEXT, stored and
-- returned byte for byte (no re-encoding); cast to jsonb to query it ad hoc.
CREATE TABLE receipts (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    id          TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
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
-- The platform-wide listing (newest first across tenants) without a full sort.
CREATE INDEX receipts_time ON receipts(created_at, id);

-- Per-tenant data key (wrapped by the master key). HMAC and encryption keys for the
-- tenant's receipts derive from it; deleting the row crypto-shreds the tenant.
CREATE TABLE tenant_keys (
    tenant_id    TEXT COLLATE "C" PRIMARY KEY,
    wrapped_key  TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
