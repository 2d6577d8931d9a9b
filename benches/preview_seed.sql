-- 100,000 sagas in flight for timing `order-saga sagas preview` (BENCHMARKS.md):
-- a third each in RESERVING_INVENTORY, AWAITING_PAYMENT and PENDING_REVIEW,
-- with the transition log each would have. Run on an empty, migrated database:
--   mariadb -uroot preview_bench < benches/preview_seed.sql
SET FOREIGN_KEY_CHECKS = 0;
INSERT INTO saga_instances (order_id, saga_name, definition_version, state, version, terminal, tenant_region, data,
                            state_entered_at, created_at, updated_at)
SELECT seq, 'order', 1, ELT(1 + seq % 3, 'RESERVING_INVENTORY', 'AWAITING_PAYMENT', 'PENDING_REVIEW'),
       1 + (seq % 3 > 0), 0, 'eu-west', '{}', NOW(6), NOW(6), NOW(6)
FROM seq_1_to_100000;
INSERT INTO saga_transitions (order_id, saga_version, event_id, event_name, from_state, to_state, actor, reason, occurred_at)
SELECT seq, 1, CONCAT(seq, ':start'), 'order.created.v1', '-', 'RESERVING_INVENTORY', 'api', NULL, NOW(6)
FROM seq_1_to_100000;
INSERT INTO saga_transitions (order_id, saga_version, event_id, event_name, from_state, to_state, actor, reason, occurred_at)
SELECT seq, 2, CONCAT(seq, ':r'), IF(seq % 3 = 1, 'inventory.reserved.v1', 'inventory.reservation.failed.v1'),
       'RESERVING_INVENTORY', IF(seq % 3 = 1, 'AWAITING_PAYMENT', 'PENDING_REVIEW'), 'inventory', NULL, NOW(6)
FROM seq_1_to_100000 WHERE seq % 3 > 0;
