-- Tenants' own upstream (Anthropic) keys, "bring your own key". Only ciphertext is
-- stored: the server seals the key with the tenant's data key (AES-256-GCM, AAD binding
-- tenant and purpose), so deleting the data key makes it unreadable. `last4` is the only
-- plaintext hint the API ever shows.
CREATE TABLE tenant_upstream_keys (
    tenant_id   TEXT NOT NULL PRIMARY KEY,
    sealed      TEXT NOT NULL,
    last4       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
