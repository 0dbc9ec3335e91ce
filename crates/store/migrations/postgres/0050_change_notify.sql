-- Change propagation between replicas: every write that changes what a gateway caches
-- (tenants, keys, active policies) sends a NOTIFY on `palisade_changes` with the table and
-- the tenant (scope) it concerns. Triggers fire for any writer — a replica, the CLI, or
-- an operator's SQL — so nothing can change behind the caches' back. The payload carries
-- ids only. Notifications are delivered at commit, so a replica that hears one reads the
-- committed row.
CREATE OR REPLACE FUNCTION palisade_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant TEXT;
BEGIN
    IF TG_TABLE_NAME = 'api_keys' AND TG_OP = 'UPDATE'
       AND (to_jsonb(NEW) - 'last_used_at') = (to_jsonb(OLD) - 'last_used_at') THEN
        -- Only the throttled last-used stamp moved: nothing a cache holds changed.
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'tenants' THEN
        tenant := COALESCE(NEW.id, OLD.id);
    ELSIF TG_TABLE_NAME = 'active_policies' THEN
        tenant := COALESCE(NEW.scope, OLD.scope);
    ELSE
        tenant := COALESCE(NEW.tenant_id, OLD.tenant_id);
    END IF;
    PERFORM pg_notify(
        'palisade_changes',
        json_build_object('table', TG_TABLE_NAME, 'tenant', tenant)::text
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER tenants_notify AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION palisade_notify_change();
CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION palisade_notify_change();
CREATE TRIGGER active_policies_notify AFTER INSERT OR UPDATE OR DELETE ON active_policies
    FOR EACH ROW EXECUTE FUNCTION palisade_notify_change();
