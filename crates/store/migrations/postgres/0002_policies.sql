-- Policy versions are immutable and addressed by the SHA-256 of their source. `scope` is
-- a tenant id, or '@platform' for the platform policy (tenant ids cannot start with '@').
-- Mirrors sqlite/0002_policies.sql.
CREATE TABLE policy_versions (
    scope       TEXT COLLATE "C" NOT NULL,
    hash        TEXT COLLATE "C" NOT NULL,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (scope, hash)
);

CREATE TABLE active_policies (
    scope         TEXT COLLATE "C" PRIMARY KEY,
    hash          TEXT COLLATE "C" NOT NULL,
    activated_at  BIGINT NOT NULL,
    FOREIGN KEY (scope, hash) REFERENCES policy_versions(scope, hash)
);
