-- Key rotation with a grace period: the previous secret's hash stays valid until
-- prev_valid_until (unix ms). Per-key allowed networks (JSON list of CIDRs; empty = any).
ALTER TABLE api_keys ADD COLUMN prev_secret_hash TEXT;
ALTER TABLE api_keys ADD COLUMN prev_valid_until BIGINT;
ALTER TABLE api_keys ADD COLUMN allowed_networks JSON NOT NULL DEFAULT '[]';
