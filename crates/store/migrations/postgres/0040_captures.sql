-- Full-content captures (mirrors sqlite/0040_captures.sql).
CREATE TABLE captures (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    receipt_id  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    sealed      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX captures_by_receipt ON captures (tenant_id, receipt_id);

-- Same row-level security as every tenant table (see 0003).
ALTER TABLE captures ENABLE ROW LEVEL SECURITY;
ALTER TABLE captures FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON captures
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'palisade_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON captures TO palisade_app;
    END IF;
END
$$;
