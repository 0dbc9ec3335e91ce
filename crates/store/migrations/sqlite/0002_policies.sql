-- Policy versions are immutable and addressed by the SHA-256 of their source. `scope` is
-- a tenant id, or '@platform' for the platform policy (tenant ids cannot start with '@').
CREATE TABLE policy_versions (
    scope       TEXT NOT NULL,
    hash        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (scope, hash)
);

CREATE TABLE active_policies (
    scope         TEXT PRIMARY KEY NOT NULL,
    hash          TEXT NOT NULL,
    activated_at  INTEGER NOT NULL,
    FOREIGN KEY (scope, hash) REFERENCES policy_versions(scope, hash)
);
