-- Human approvals of tool calls (mirrors sqlite/0030_approvals.sql).
CREATE TABLE approvals (
    tenant_id         TEXT COLLATE "C" NOT NULL,
    id                TEXT COLLATE "C" NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    status            TEXT NOT NULL,
    tool              TEXT NOT NULL,
    args_hash         TEXT NOT NULL,
    requester_key_id  TEXT NOT NULL,
    requester_user_id TEXT,
    token_hash        TEXT,
    version           BIGINT NOT NULL,
    body              TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX approvals_by_time ON approvals (tenant_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX approvals_by_token ON approvals (tenant_id, token_hash);

-- Same row-level security as every tenant table (see 0003).
ALTER TABLE approvals ENABLE ROW LEVEL SECURITY;
ALTER TABLE approvals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON approvals
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'palisade_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON approvals TO palisade_app;
    END IF;
END
$$;
