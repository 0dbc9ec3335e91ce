-- Sentinel alerts (crates/sentinel). One row per alert raised; `details` is JSON text
-- (detector, values, subject). Acknowledgement is the only update.
CREATE TABLE alerts (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    dedup_key   TEXT NOT NULL,
    signal      TEXT NOT NULL,
    detector    TEXT NOT NULL,
    severity    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    message     TEXT NOT NULL,
    details     TEXT NOT NULL,
    receipt_id  TEXT,
    acked_at    INTEGER,
    acked_by    TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX alerts_by_time ON alerts (tenant_id, created_at DESC, id DESC);
