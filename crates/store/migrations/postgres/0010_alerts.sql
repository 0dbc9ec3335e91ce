-- Sentinel alerts (mirrors sqlite/0010_alerts.sql). One row per alert raised; `details`
-- is JSON text. Acknowledgement is the only update.
CREATE TABLE alerts (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    dedup_key   TEXT NOT NULL,
    signal      TEXT NOT NULL,
    detector    TEXT NOT NULL,
    severity    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    message     TEXT NOT NULL,
    details     TEXT NOT NULL,
    receipt_id  TEXT,
    acked_at    BIGINT,
    acked_by    TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX alerts_by_time ON alerts (tenant_id, created_at DESC, id DESC);

-- Same row-level security as every tenant table (see 0003).
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON alerts
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'palisade_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON alerts TO palisade_app;
    END IF;
END
$$;
