-- Replies recorded without effect because they answer an older command than
-- the one their step waits for.
ALTER TABLE saga_inbox
    MODIFY outcome ENUM('applied', 'ignored', 'parked', 'dead_lettered', 'stale_reply') NOT NULL;

-- Event-time watermarks of the inbound topics (timers are judged by them):
-- every message of (topic, partition) produced at or before `consumed_through`
-- has been applied (committed). Written by whichever replica consumes the
-- partition, only ever moved forward (GREATEST), read by every sweeper.
-- A partition no replica consumes keeps its last value, so timers that it
-- could still answer wait (up to ORDER_SAGA_TIMER_MAX_DEFER).
CREATE TABLE consumer_watermarks (
    topic            VARCHAR(249) NOT NULL,
    kafka_partition  INT          NOT NULL,
    consumed_through DATETIME(6)  NOT NULL,
    -- The next offset to apply, when the row was last moved (for operators).
    next_offset      BIGINT       NOT NULL DEFAULT 0,
    updated_at       DATETIME(6)  NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
) ENGINE = InnoDB;

-- Which credential (a digest of the ops token) signed the console session
-- in: a session ends when the token it was started with is rotated.
ALTER TABLE ops_sessions ADD COLUMN credential_hash BINARY(32) NULL;
