-- Orders: the system of record.
-- Portable between MariaDB 10.6+ and MySQL 8.0: no RETURNING, no UUID type,
-- JSON kept as LONGTEXT, every statement idempotent (a migration interrupted
-- half-way can be re-run).

CREATE TABLE IF NOT EXISTS orders (
    order_id        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    customer_id     VARCHAR(64)     NOT NULL,
    tenant_region   VARCHAR(32)     NOT NULL,
    currency        CHAR(3)         NOT NULL,
    -- Exact money. 19 digits with 4 decimals covers every ISO 4217 minor unit.
    total_amount    DECIMAL(19, 4)  NOT NULL,
    item_count      INT UNSIGNED    NOT NULL,
    status          ENUM('PENDING', 'CONFIRMED', 'FULFILLED', 'RETURNED', 'CANCELLED', 'PENDING_REVIEW') NOT NULL,
    created_at      DATETIME(6)     NOT NULL,
    updated_at      DATETIME(6)     NOT NULL,
    -- Optimistic concurrency: every change increments it, and writers check it.
    version         INT UNSIGNED    NOT NULL DEFAULT 1,
    PRIMARY KEY (order_id),
    KEY ix_orders_region_created (tenant_region, created_at),
    KEY ix_orders_status_updated (status, updated_at),
    KEY ix_orders_customer_created (customer_id, created_at),
    KEY ix_orders_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS order_items (
    order_id    BIGINT UNSIGNED NOT NULL,
    line_no     SMALLINT UNSIGNED NOT NULL,
    sku         VARCHAR(64)     NOT NULL,
    qty         INT UNSIGNED    NOT NULL,
    unit_price  DECIMAL(19, 4)  NOT NULL,
    PRIMARY KEY (order_id, line_no),
    CONSTRAINT fk_order_items_order FOREIGN KEY (order_id) REFERENCES orders (order_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every status change, including the creation (from_status NULL).
CREATE TABLE IF NOT EXISTS order_status_history (
    history_id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id        BIGINT UNSIGNED NOT NULL,
    from_status     ENUM('PENDING', 'CONFIRMED', 'FULFILLED', 'RETURNED', 'CANCELLED', 'PENDING_REVIEW') NULL,
    to_status       ENUM('PENDING', 'CONFIRMED', 'FULFILLED', 'RETURNED', 'CANCELLED', 'PENDING_REVIEW') NOT NULL,
    reason_code     VARCHAR(64)     NULL,
    comment         VARCHAR(1000)   NULL,
    transitioned_at DATETIME(6)     NOT NULL,
    actor           VARCHAR(128)    NOT NULL,
    PRIMARY KEY (history_id),
    KEY ix_history_order (order_id, history_id),
    CONSTRAINT fk_history_order FOREIGN KEY (order_id) REFERENCES orders (order_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
