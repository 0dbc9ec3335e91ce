-- Signed checkpoints over tenants' chain heads, and retention anchors.
-- `body` is the signed checkpoint as JSON (the members plus `signature`), exactly what an
-- export carries; the other columns index it. Two gateways signing the same head keep one.
CREATE TABLE checkpoints (
    tenant_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    head_hash   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq, key_id)
);

-- Where a tenant's retained chain starts after a purge: seq and hash of the last purged
-- receipt. Written in the transaction that deletes the receipts.
CREATE TABLE chain_anchors (
    tenant_id   TEXT PRIMARY KEY NOT NULL,
    seq         INTEGER NOT NULL,
    head_hash   TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
