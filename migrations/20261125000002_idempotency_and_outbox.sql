-- Idempotency keys of POST /orders. A key is written in the same transaction
-- as the order it created, so "key exists" implies "order exists".
-- Retention: rows older than ORDER_SAGA_IDEMPOTENCY_RETENTION (default 24h)
-- are deleted by the daemon's housekeeping job.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    idempotency_key     VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- SHA-256 of the canonical JSON of the request body.
    request_fingerprint BINARY(32)        NOT NULL,
    order_id            BIGINT UNSIGNED   NULL,
    response_status     SMALLINT UNSIGNED NULL,
    response_body       MEDIUMTEXT        NULL,
    created_at          DATETIME(6)       NOT NULL,
    PRIMARY KEY (idempotency_key),
    KEY ix_idempotency_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Transactional outbox. Rows are written in the transaction that makes the
-- change they announce; the relay publishes them in id order per shard.
-- The columns follow the Debezium outbox event router conventions, so a CDC
-- pipeline can publish this table instead of the relay:
--   table.field.event.id=event_id, table.field.event.key=aggregate_id,
--   table.field.event.type=event_type, table.field.event.payload=payload,
--   route.by.field=topic.
CREATE TABLE IF NOT EXISTS outbox (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    event_id        VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    aggregate_type  VARCHAR(64)     NOT NULL,
    aggregate_id    VARCHAR(64)     NOT NULL,
    event_type      VARCHAR(128)    NOT NULL,
    topic           VARCHAR(249)    NOT NULL,
    -- The Avro record as JSON (the relay encodes it with the registered schema).
    payload         LONGTEXT        NOT NULL,
    -- JSON object of Kafka headers (event_id, event_type, traceparent, …).
    headers         TEXT            NOT NULL,
    -- aggregate_id mod ORDER_SAGA_OUTBOX_SHARDS: one publisher per shard keeps
    -- per-order order with several replicas.
    shard           SMALLINT UNSIGNED NOT NULL,
    created_at      DATETIME(6)     NOT NULL,
    published_at    DATETIME(6)     NULL,
    attempts        INT UNSIGNED    NOT NULL DEFAULT 0,
    last_error      VARCHAR(1000)   NULL,
    PRIMARY KEY (id),
    UNIQUE KEY ux_outbox_event (event_id),
    KEY ix_outbox_pending (published_at, shard, id),
    KEY ix_outbox_aggregate (aggregate_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
