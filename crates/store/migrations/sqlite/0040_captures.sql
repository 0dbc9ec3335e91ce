-- Full-content captures (tenant opt-in, crates/store/src/capture.rs): the redacted prompt
-- and output of a call, sealed with the tenant's data key. Receipts reference a capture
-- by id (details.capture_id); only ciphertext is stored here.
CREATE TABLE captures (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    receipt_id  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    sealed      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX captures_by_receipt ON captures (tenant_id, receipt_id);
