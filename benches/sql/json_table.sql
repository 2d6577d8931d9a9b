-- Server-side cost of one statement shape against another (BENCHMARKS.md,
-- "Key lookups as one JSON parameter"). Runs inside MariaDB, so no client,
-- network or statement cache takes part: 5,000 executions each.
--
--   mysql -uroot -h127.0.0.1 -e 'CREATE DATABASE IF NOT EXISTS shapes'
--   for f in migrations/*.sql; do mysql -uroot -h127.0.0.1 shapes < "$f"; done
--   mysql -uroot -h127.0.0.1 shapes < benches/sql/json_table.sql
--   for p in 'bench_values(5000)' 'bench_prep(5000)' 'bench_json(5000,1)'; do
--     /usr/bin/time -f "$p %e s" mysql -uroot -h127.0.0.1 shapes -e "SET autocommit=0; TRUNCATE ob; CALL $p; COMMIT"; done
--   mysql -uroot -h127.0.0.1 shapes -e 'SET autocommit=0; TRUNCATE ob; CALL bench_json(5000,1); COMMIT'
--   for p in 'bench_in(5000)' 'bench_jin(5000)'; do
--     /usr/bin/time -f "$p %e s" mysql -uroot -h127.0.0.1 shapes -e "SET autocommit=0; CALL $p; COMMIT"; done
--
-- bench_values: a prepared 4-row INSERT … VALUES into a copy of `outbox`;
-- bench_prep: the same, prepared afresh for every execution (a cache miss);
-- bench_json: the same rows as INSERT … SELECT … FROM JSON_TABLE(?) (ord = 1
--   with ORDER BY the ordinality column, 0 without, 2 with VARCHAR columns);
-- bench_in / bench_jin: an 8-key locking read by IN (…) list / by JSON_TABLE join.
DROP TABLE IF EXISTS ob; CREATE TABLE ob LIKE outbox;
DROP PROCEDURE IF EXISTS bench_values; DROP PROCEDURE IF EXISTS bench_json; DROP PROCEDURE IF EXISTS bench_json_noorder;
DELIMITER //
CREATE PROCEDURE bench_values(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  PREPARE s FROM "INSERT INTO ob (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, tenant_region, created_at) VALUES (?, 'order', '123', 'order.created', 'orders.events', '{\"a\":1,\"bbbbbbbbbbbbbbbbbbbbbbbbbb\":\"cccccccccccccccccccccccccccccccccccccccccc\"}', '{\"traceparent\":\"00-abc\"}', 3, NULL, NOW(6)), (?, 'order', '123', 'order.created', 'orders.events', '{\"a\":1,\"bbbbbbbbbbbbbbbbbbbbbbbbbb\":\"cccccccccccccccccccccccccccccccccccccccccc\"}', '{\"traceparent\":\"00-abc\"}', 3, NULL, NOW(6)), (?, 'order', '123', 'order.created', 'orders.events', '{\"a\":1,\"bbbbbbbbbbbbbbbbbbbbbbbbbb\":\"cccccccccccccccccccccccccccccccccccccccccc\"}', '{\"traceparent\":\"00-abc\"}', 3, NULL, NOW(6)), (?, 'order', '123', 'order.created', 'orders.events', '{\"a\":1,\"bbbbbbbbbbbbbbbbbbbbbbbbbb\":\"cccccccccccccccccccccccccccccccccccccccccc\"}', '{\"traceparent\":\"00-abc\"}', 3, NULL, NOW(6))";
  WHILE i < n DO
    SET @a = CONCAT('v', i, 'a'), @b = CONCAT('v', i, 'b'), @c = CONCAT('v', i, 'c'), @d = CONCAT('v', i, 'd');
    EXECUTE s USING @a, @b, @c, @d;
    SET i = i + 1;
  END WHILE;
END//
CREATE PROCEDURE bench_json(n INT, ord INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  IF ord = 1 THEN
  PREPARE s FROM "INSERT INTO ob (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, tenant_region, created_at) SELECT j.event_id, 'order', j.aggregate_id, j.event_type, j.topic, j.payload, j.headers, j.shard, j.tenant_region, NOW(6) FROM JSON_TABLE(?, '$[*]' COLUMNS (n FOR ORDINALITY, event_id LONGTEXT PATH '$[0]', aggregate_id LONGTEXT PATH '$[1]', event_type LONGTEXT PATH '$[2]', topic LONGTEXT PATH '$[3]', payload LONGTEXT PATH '$[4]', headers LONGTEXT PATH '$[5]', shard SMALLINT UNSIGNED PATH '$[6]', tenant_region LONGTEXT PATH '$[7]')) AS j ORDER BY j.n";
  ELSEIF ord = 0 THEN
  PREPARE s FROM "INSERT INTO ob (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, tenant_region, created_at) SELECT j.event_id, 'order', j.aggregate_id, j.event_type, j.topic, j.payload, j.headers, j.shard, j.tenant_region, NOW(6) FROM JSON_TABLE(?, '$[*]' COLUMNS (event_id LONGTEXT PATH '$[0]', aggregate_id LONGTEXT PATH '$[1]', event_type LONGTEXT PATH '$[2]', topic LONGTEXT PATH '$[3]', payload LONGTEXT PATH '$[4]', headers LONGTEXT PATH '$[5]', shard SMALLINT UNSIGNED PATH '$[6]', tenant_region LONGTEXT PATH '$[7]')) AS j";
  ELSE
  PREPARE s FROM "INSERT INTO ob (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, tenant_region, created_at) SELECT j.event_id, 'order', j.aggregate_id, j.event_type, j.topic, j.payload, j.headers, j.shard, j.tenant_region, NOW(6) FROM JSON_TABLE(?, '$[*]' COLUMNS (event_id VARCHAR(64) PATH '$[0]', aggregate_id VARCHAR(64) PATH '$[1]', event_type VARCHAR(128) PATH '$[2]', topic VARCHAR(249) PATH '$[3]', payload TEXT PATH '$[4]', headers TEXT PATH '$[5]', shard SMALLINT UNSIGNED PATH '$[6]', tenant_region VARCHAR(32) PATH '$[7]')) AS j";
  END IF;
  WHILE i < n DO
    SET @j = CONCAT('[["v', i, 'a","123","order.created","orders.events","{\\"a\\":1,\\"bbbbbbbbbbbbbbbbbbbbbbbbbb\\":\\"cccccccccccccccccccccccccccccccccccccccccc\\"}","{\\"traceparent\\":\\"00-abc\\"}",3,null],',
                    '["v', i, 'b","123","order.created","orders.events","{\\"a\\":1,\\"bbbbbbbbbbbbbbbbbbbbbbbbbb\\":\\"cccccccccccccccccccccccccccccccccccccccccc\\"}","{\\"traceparent\\":\\"00-abc\\"}",3,null],',
                    '["v', i, 'c","123","order.created","orders.events","{\\"a\\":1,\\"bbbbbbbbbbbbbbbbbbbbbbbbbb\\":\\"cccccccccccccccccccccccccccccccccccccccccc\\"}","{\\"traceparent\\":\\"00-abc\\"}",3,null],',
                    '["v', i, 'd","123","order.created","orders.events","{\\"a\\":1,\\"bbbbbbbbbbbbbbbbbbbbbbbbbb\\":\\"cccccccccccccccccccccccccccccccccccccccccc\\"}","{\\"traceparent\\":\\"00-abc\\"}",3,null]]');
    EXECUTE s USING @j;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
DELIMITER //
CREATE PROCEDURE bench_prep(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < n DO
  PREPARE s FROM "INSERT INTO ob (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, tenant_region, created_at) VALUES (?, 'order', '123', 'order.created', 'orders.events', '{\"a\":1,\"bbbbbbbbbbbbbbbbbbbbbbbbbb\":\"cccccccccccccccccccccccccccccccccccccccccc\"}', '{\"traceparent\":\"00-abc\"}', 3, NULL, NOW(6)), (?, 'order', '123', 'order.created', 'orders.events', '{\"a\":1,\"bbbbbbbbbbbbbbbbbbbbbbbbbb\":\"cccccccccccccccccccccccccccccccccccccccccc\"}', '{\"traceparent\":\"00-abc\"}', 3, NULL, NOW(6)), (?, 'order', '123', 'order.created', 'orders.events', '{\"a\":1,\"bbbbbbbbbbbbbbbbbbbbbbbbbb\":\"cccccccccccccccccccccccccccccccccccccccccc\"}', '{\"traceparent\":\"00-abc\"}', 3, NULL, NOW(6)), (?, 'order', '123', 'order.created', 'orders.events', '{\"a\":1,\"bbbbbbbbbbbbbbbbbbbbbbbbbb\":\"cccccccccccccccccccccccccccccccccccccccccc\"}', '{\"traceparent\":\"00-abc\"}', 3, NULL, NOW(6))";
    SET @a = CONCAT('v', i, 'a'), @b = CONCAT('v', i, 'b'), @c = CONCAT('v', i, 'c'), @d = CONCAT('v', i, 'd');
    EXECUTE s USING @a, @b, @c, @d;
    DEALLOCATE PREPARE s;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
DROP PROCEDURE IF EXISTS bench_in; DROP PROCEDURE IF EXISTS bench_jin;
DELIMITER //
CREATE PROCEDURE bench_in(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  PREPARE s FROM "SELECT id, event_id, payload INTO @x, @y, @z FROM ob WHERE id IN (?, ?, ?, ?, ?, ?, ?, ?) ORDER BY id LIMIT 1 FOR UPDATE";
  WHILE i < n DO
    SET @a = i*4+1, @b = i*4+2, @c = i*4+3, @d = i*4+4, @e=i*4+5, @f=i*4+6, @g=i*4+7, @h=i*4+8;
    EXECUTE s USING @a, @b, @c, @d, @e, @f, @g, @h;
    SET i = i + 1;
  END WHILE;
END//
CREATE PROCEDURE bench_jin(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  PREPARE s FROM "SELECT o.id, o.event_id, o.payload INTO @x, @y, @z FROM JSON_TABLE(?, '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$')) AS j STRAIGHT_JOIN ob o FORCE INDEX (PRIMARY) ON o.id = j.k LIMIT 1 FOR UPDATE";
  WHILE i < n DO
    SET @j = CONCAT('[', i*4+1, ',', i*4+2, ',', i*4+3, ',', i*4+4, ',', i*4+5, ',', i*4+6, ',', i*4+7, ',', i*4+8, ']');
    EXECUTE s USING @j;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
