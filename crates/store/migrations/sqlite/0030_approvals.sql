-- Human approvals of tool calls (crates/server/src/approvals.rs). One row per pending
-- approval; `body` is JSON text (args, requester context, decisions, quorum). `version`
-- makes every decision a compare-and-set; `token_hash` (sha256 of the single-use token)
-- is set once approved, and redemption flips `status` to `used` in one UPDATE.
CREATE TABLE approvals (
    tenant_id         TEXT NOT NULL,
    id                TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    status            TEXT NOT NULL,
    tool              TEXT NOT NULL,
    args_hash         TEXT NOT NULL,
    requester_key_id  TEXT NOT NULL,
    requester_user_id TEXT,
    token_hash        TEXT,
    version           INTEGER NOT NULL,
    body              TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX approvals_by_time ON approvals (tenant_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX approvals_by_token ON approvals (tenant_id, token_hash);
