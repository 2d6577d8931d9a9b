-- The order's region travels with each outbox row, so that the relay (or a
-- CDC pipeline) can choose the partition from it (ORDER_SAGA_PARTITIONING):
-- the same partition after any restart, on any replica.
ALTER TABLE outbox
    ADD COLUMN tenant_region VARCHAR(32) NULL;
