-- Bulk jobs, durable: any replica lists them and shows their progress, a job
-- is stopped by setting `cancel_requested_by` (its runner sees it before the
-- next saga), and a job whose runner stopped heartbeating (a crash, a
-- restart) is taken over and resumed by a replica's job supervisor.
CREATE TABLE ops_jobs (
    job_id              CHAR(36) CHARACTER SET ascii NOT NULL,
    action              VARCHAR(64)   NOT NULL,
    -- The action as the API takes it (JSON), and the selection previewed.
    action_json         TEXT          NOT NULL,
    selection           TEXT          NOT NULL,
    actor               VARCHAR(128)  NOT NULL,
    reason              VARCHAR(1000) NOT NULL,
    state               ENUM('running', 'finished', 'cancelled') NOT NULL,
    total               INT UNSIGNED  NOT NULL,
    done                INT UNSIGNED  NOT NULL DEFAULT 0,
    succeeded           INT UNSIGNED  NOT NULL DEFAULT 0,
    failed              INT UNSIGNED  NOT NULL DEFAULT 0,
    rate_per_second     INT UNSIGNED  NOT NULL,
    -- The process running it and when it last said so.
    owner               VARCHAR(64)   NOT NULL,
    heartbeat_at        DATETIME(6)   NOT NULL,
    -- How many times another runner took it over.
    resumed             INT UNSIGNED  NOT NULL DEFAULT 0,
    cancel_requested_by VARCHAR(128)  NULL,
    created_at          DATETIME(6)   NOT NULL,
    finished_at         DATETIME(6)   NULL,
    PRIMARY KEY (job_id),
    KEY ix_ops_jobs_state (state, heartbeat_at),
    KEY ix_ops_jobs_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The sagas of a job, in the order it acts on them, each at the version it
-- had when selected (changed since: refused as stale), and its result.
CREATE TABLE ops_job_items (
    job_id           CHAR(36) CHARACTER SET ascii NOT NULL,
    seq              INT UNSIGNED    NOT NULL,
    order_id         BIGINT UNSIGNED NOT NULL,
    expected_version INT UNSIGNED    NOT NULL,
    result           ENUM('pending', 'applied', 'refused', 'cancelled') NOT NULL DEFAULT 'pending',
    error            VARCHAR(1000)   NULL,
    PRIMARY KEY (job_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
