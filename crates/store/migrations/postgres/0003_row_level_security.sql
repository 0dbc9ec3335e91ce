-- Isolation in depth: row-level security on every tenant table, keyed on the
-- transaction-local setting `palisade.tenant`, which the store sets at the start of every
-- transaction (`SELECT set_config('palisade.tenant', $1, true)`):
--   * a tenant id (or a policy scope such as '@platform'): only that tenant's rows are
--     visible or writable, even to a query that forgot its `WHERE tenant_id`;
--   * '*': platform-wide operations (admin listings, key lookup for authentication,
--     chain enumeration);
--   * unset or empty: no rows at all (fail closed).
-- FORCE makes the policies bind the table owner too. Superusers and BYPASSRLS roles
-- skip RLS whatever we do, so when the store connects as one it switches every pooled
-- connection to the unprivileged role `palisade_app` created here (see POSTGRES.md).

-- The unprivileged role. Roles are cluster-wide: create it only if missing, tolerate a
-- concurrent creator (parallel migrations of several databases), and skip quietly when
-- the migrating user may not create roles (then it must connect as a non-superuser owner,
-- which FORCE binds).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'palisade_app') THEN
        BEGIN
            CREATE ROLE palisade_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role palisade_app; relying on FORCE ROW LEVEL SECURITY for the owner';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'palisade_app') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO palisade_app', current_schema());
        GRANT SELECT, INSERT, UPDATE, DELETE
            ON tenants, api_keys, chain_heads, receipts, tenant_keys, policy_versions,
               active_policies
            TO palisade_app;
        -- `migrations_applied` reads the migration ledger.
        GRANT SELECT ON _sqlx_migrations TO palisade_app;
        -- Tables added by later migrations (run by this same user) are granted too; each
        -- such migration must still add its own policy.
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO palisade_app',
            current_schema());
    END IF;
END
$$;

-- Whether a row owned by `owner_id` (a tenant id; for policy tables the scope, a tenant
-- id or '@platform') is visible under the current setting. Unset or empty shows nothing,
-- even a row whose owner id were empty. A single-expression SQL function, so the planner
-- inlines it into each policy.
CREATE FUNCTION palisade_row_visible(owner_id TEXT) RETURNS BOOLEAN
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $fn$
        SELECT CASE current_setting('palisade.tenant', true)
                   WHEN '*' THEN true
                   WHEN '' THEN false
                   ELSE current_setting('palisade.tenant', true) = owner_id
               END
    $fn$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (palisade_row_visible(id)) WITH CHECK (palisade_row_visible(id));

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

ALTER TABLE chain_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE chain_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chain_heads
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

ALTER TABLE receipts ENABLE ROW LEVEL SECURITY;
ALTER TABLE receipts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON receipts
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

ALTER TABLE tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_keys
    USING (palisade_row_visible(tenant_id)) WITH CHECK (palisade_row_visible(tenant_id));

ALTER TABLE policy_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE policy_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON policy_versions
    USING (palisade_row_visible(scope)) WITH CHECK (palisade_row_visible(scope));

ALTER TABLE active_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE active_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON active_policies
    USING (palisade_row_visible(scope)) WITH CHECK (palisade_row_visible(scope));
