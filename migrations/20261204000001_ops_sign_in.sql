-- Console sign-ins through the OpenID Provider that are under way: the PKCE
-- verifier and nonce stay here (never in the browser) until the provider
-- sends the browser back, on whichever replica. Keyed by the SHA-256 of the
-- `state`; each row is used once and lives at most ten minutes.
CREATE TABLE ops_sign_ins (
    state_hash BINARY(32)   NOT NULL,
    nonce      VARCHAR(64)  NOT NULL,
    verifier   VARCHAR(128) NOT NULL,
    redirect   VARCHAR(512) NOT NULL,
    expires_at DATETIME(6)  NOT NULL,
    PRIMARY KEY (state_hash),
    KEY ix_ops_sign_ins_expires (expires_at)
) ENGINE = InnoDB;

-- The ops role of a console session: `read`, `act` or `admin` (a session
-- signed in with the shared ops token is `admin`).
ALTER TABLE ops_sessions ADD COLUMN role VARCHAR(8) NOT NULL DEFAULT 'admin';
