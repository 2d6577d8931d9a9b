-- A row the relay cannot encode (bad payload, schema mismatch) is held until
-- `held_until` instead of being retried on every round; the rows after it of
-- the same order wait with it (per-order order), other orders flow.
ALTER TABLE outbox
    ADD COLUMN held_until DATETIME(6) NULL,
    ADD KEY ix_outbox_held (held_until);
