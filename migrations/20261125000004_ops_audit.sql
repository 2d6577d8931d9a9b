-- Every operator action (not dry runs): who, why, what it changed.
CREATE TABLE IF NOT EXISTS ops_audit (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id        BIGINT UNSIGNED NULL,
    action          VARCHAR(64)     NOT NULL,
    params          TEXT            NOT NULL,
    actor           VARCHAR(128)    NOT NULL,
    reason          VARCHAR(1000)   NOT NULL,
    -- Saga version the operator saw, and after the action.
    version_before  INT UNSIGNED    NULL,
    version_after   INT UNSIGNED    NULL,
    result          VARCHAR(32)     NOT NULL,
    detail          TEXT            NULL,
    -- Set for the actions of one bulk job.
    job_id          CHAR(36) CHARACTER SET ascii NULL,
    created_at      DATETIME(6)     NOT NULL,
    PRIMARY KEY (id),
    KEY ix_audit_order (order_id, id),
    KEY ix_audit_job (job_id),
    KEY ix_audit_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
