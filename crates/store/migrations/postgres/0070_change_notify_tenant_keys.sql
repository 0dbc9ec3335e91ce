-- The change feed (0050) also covers tenants' data keys and their own upstream keys: a
-- data key deleted (crypto-shredding) or an upstream key set or removed through one
-- replica is dropped from every replica's cache at once, not when its TTL runs out.
CREATE TRIGGER tenant_keys_notify AFTER INSERT OR UPDATE OR DELETE ON tenant_keys
    FOR EACH ROW EXECUTE FUNCTION palisade_notify_change();
CREATE TRIGGER tenant_upstream_keys_notify AFTER INSERT OR UPDATE OR DELETE ON tenant_upstream_keys
    FOR EACH ROW EXECUTE FUNCTION palisade_notify_change();
