-- Sessions of the ops console (/ops/ui). Kept in the database, not in one
-- replica's memory, so that any replica behind the load balancer knows a
-- session and signing out ends it everywhere. Only the SHA-256 digest of the
-- session id is stored (the CSRF token is derived from the id): a read of this
-- table does not let anyone act as an operator.
CREATE TABLE IF NOT EXISTS ops_sessions (
    id_hash       BINARY(32)   NOT NULL,
    actor         VARCHAR(128) NOT NULL,
    created_at    DATETIME(6)  NOT NULL,
    last_seen_at  DATETIME(6)  NOT NULL,
    expires_at    DATETIME(6)  NOT NULL,
    PRIMARY KEY (id_hash),
    KEY ix_ops_sessions_expires (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
