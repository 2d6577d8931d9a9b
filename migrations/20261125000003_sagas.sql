-- Saga state, inbox, durable timers, parked events and relay leases.

-- One saga per order. `data` is the engine's instance data as JSON.
CREATE TABLE IF NOT EXISTS saga_instances (
    order_id            BIGINT UNSIGNED NOT NULL,
    saga_name           VARCHAR(64)     NOT NULL,
    -- The definition version the saga started on; it stays on it.
    definition_version  INT UNSIGNED    NOT NULL,
    state               VARCHAR(64)     NOT NULL,
    -- Increments with every applied transition (optimistic concurrency for ops actions).
    version             INT UNSIGNED    NOT NULL,
    terminal            TINYINT(1)      NOT NULL DEFAULT 0,
    tenant_region       VARCHAR(32)     NOT NULL,
    data                LONGTEXT        NOT NULL,
    state_entered_at    DATETIME(6)     NOT NULL,
    created_at          DATETIME(6)     NOT NULL,
    updated_at          DATETIME(6)     NOT NULL,
    -- Set when an event could not be applied; later events of the order are
    -- parked until an operator releases the saga.
    quarantined_at      DATETIME(6)     NULL,
    quarantine_reason   VARCHAR(1000)   NULL,
    PRIMARY KEY (order_id),
    KEY ix_saga_state_entered (state, state_entered_at),
    KEY ix_saga_version_state (definition_version, state),
    KEY ix_saga_quarantined (quarantined_at),
    CONSTRAINT fk_saga_order FOREIGN KEY (order_id) REFERENCES orders (order_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every applied transition (and every quarantine), for inspection and audit.
CREATE TABLE IF NOT EXISTS saga_transitions (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id        BIGINT UNSIGNED NOT NULL,
    saga_version    INT UNSIGNED    NOT NULL,
    event_id        VARCHAR(191) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_name      VARCHAR(128)    NOT NULL,
    from_state      VARCHAR(64)     NOT NULL,
    to_state        VARCHAR(64)     NOT NULL,
    actor           VARCHAR(128)    NOT NULL,
    reason          VARCHAR(255)    NULL,
    occurred_at     DATETIME(6)     NOT NULL,
    PRIMARY KEY (id),
    KEY ix_transitions_order (order_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Inbox: one row per event id ever handled (Kafka events, timer firings,
-- manual requests). The primary key is the de-duplication.
CREATE TABLE IF NOT EXISTS saga_inbox (
    event_id        VARCHAR(191) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    order_id        BIGINT UNSIGNED NULL,
    event_name      VARCHAR(128)    NOT NULL,
    source          VARCHAR(300)    NOT NULL,
    outcome         ENUM('applied', 'ignored', 'parked', 'dead_lettered') NOT NULL,
    received_at     DATETIME(6)     NOT NULL,
    PRIMARY KEY (event_id),
    KEY ix_inbox_order (order_id),
    KEY ix_inbox_received (received_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Durable timers, armed in the transaction of the transition that arms them.
CREATE TABLE IF NOT EXISTS saga_timers (
    order_id        BIGINT UNSIGNED NOT NULL,
    timer_name      VARCHAR(64)     NOT NULL,
    due_at          DATETIME(6)     NOT NULL,
    -- Saga version that armed it: part of the firing's event id, so a
    -- re-armed timer fires again but one arming never fires twice.
    armed_version   INT UNSIGNED    NOT NULL,
    armed_at        DATETIME(6)     NOT NULL,
    PRIMARY KEY (order_id, timer_name),
    KEY ix_timers_due (due_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Events of quarantined sagas, kept in arrival order until released.
CREATE TABLE IF NOT EXISTS saga_parked_events (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id        BIGINT UNSIGNED NOT NULL,
    event_id        VARCHAR(191) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_name      VARCHAR(128)    NOT NULL,
    source          VARCHAR(300)    NOT NULL,
    -- The decoded message as JSON; NULL when the bytes could not be decoded.
    payload         LONGTEXT        NULL,
    traceparent     VARCHAR(64)     NULL,
    -- 1 for the event that caused the quarantine.
    poison          TINYINT(1)      NOT NULL,
    error           VARCHAR(2000)   NULL,
    parked_at       DATETIME(6)     NOT NULL,
    resolved_at     DATETIME(6)     NULL,
    resolution      ENUM('replayed', 'skipped') NULL,
    PRIMARY KEY (id),
    KEY ix_parked_order (order_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Outbox shard leases: one active publisher per shard across replicas.
CREATE TABLE IF NOT EXISTS outbox_leases (
    shard           SMALLINT UNSIGNED NOT NULL,
    owner           VARCHAR(128)    NULL,
    lease_until     DATETIME(6)     NULL,
    PRIMARY KEY (shard)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Live relay instances (heartbeats), to share shards fairly.
CREATE TABLE IF NOT EXISTS outbox_relays (
    owner           VARCHAR(128)    NOT NULL,
    heartbeat_at    DATETIME(6)     NOT NULL,
    PRIMARY KEY (owner)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
