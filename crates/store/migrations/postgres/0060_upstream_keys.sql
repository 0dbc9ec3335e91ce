-- Tenants' own upstream keys (mirrors sqlite/0060_upstream_keys.sql). Ciphertext only.
CREATE TABLE tenant_upstream_keys (
    tenant_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    sealed      TEXT NOT NULL,
    last4       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Same row-level security as every tenant table (see 0003).
ALTER TABLE tenant_upstream_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_upstream_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_upstream_keys
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'palisade_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_upstream_keys TO palisade_app;
    END IF;
END
$$;
