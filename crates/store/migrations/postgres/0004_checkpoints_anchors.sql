-- Signed checkpoints over tenants' chain heads, and retention anchors (mirrors
-- sqlite/0003_checkpoints_anchors.sql). `body` is the signed checkpoint as JSON text,
-- exactly what an export carries; the other columns index it. Two gateways signing the
-- same head keep one.
CREATE TABLE checkpoints (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    key_id      TEXT COLLATE "C" NOT NULL,
    head_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq, key_id)
);

-- Where a tenant's retained chain starts after a purge: seq and hash of the last purged
-- receipt. Written in the transaction that deletes the receipts.
CREATE TABLE chain_anchors (
    tenant_id   TEXT COLLATE "C" PRIMARY KEY,
    seq         BIGINT NOT NULL,
    head_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Same row-level security as every tenant table (see 0003). Grants come from the
-- default privileges set in 0003; repeat them for installs where that user differs.
ALTER TABLE checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON checkpoints
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

ALTER TABLE chain_anchors ENABLE ROW LEVEL SECURITY;
ALTER TABLE chain_anchors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chain_anchors
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'palisade_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON checkpoints, chain_anchors TO palisade_app;
    END IF;
END
$$;
