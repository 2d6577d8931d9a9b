//! Never stall, never lose: bad events of every class, a panic while applying
//! one, a database outage longer than max.poll.interval, SIGTERM with the
//! database down.

use std::time::Duration;

use order_saga::contracts::*;

use crate::daemon::*;
use crate::helpers::*;
use crate::proxy::in_front_of_database;

const T: Duration = Duration::from_secs(90);

fn ts() -> TimestampMicros {
    TimestampMicros::from_datetime(chrono::Utc::now())
}

fn reserved(event_id: &str, order_id: i64) -> Message {
    Message::from(InventoryReserved {
        event_id: event_id.into(),
        order_id,
        occurred_at: ts(),
        tenant_region: "eu".into(),
        command_id: None,
    })
}

fn payment_failed(event_id: &str, order_id: i64) -> Message {
    Message::from(PaymentFailed {
        event_id: event_id.into(),
        order_id,
        occurred_at: ts(),
        tenant_region: "eu".into(),
        payment_intent_id: "pi".into(),
        reason: "x".into(),
    })
}

fn dlq_error_containing<'a>(dlq: &'a [Record], needle: &str) -> Option<&'a Record> {
    dlq.iter().find(|r| r.headers.get("dlq_error").is_some_and(|e| e.contains(needle)))
}

/// Each of these reached the database before and was retried forever,
/// stopping its partition, then the replica, then the group.
#[tokio::test]
async fn bad_events_of_every_class_are_dead_lettered_and_the_partition_keeps_flowing() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[("ORDER_SAGA_FAILPOINTS", "saga.apply.panic=evil-panic")]).await;
    let body = order_body("c", "eu", &[("A", 1, "1.00")]);
    let (b, c, next) = (d.create_order(&body).await, d.create_order(&body).await, d.create_order(&body).await);
    for id in [b, c, next] {
        env.wait_state(id, "RESERVING_INVENTORY", T).await;
    }
    let long_id = "x".repeat(70);
    let huge_id = "y".repeat(300);
    // 1. A negative order id (BIGINT UNSIGNED).
    env.publish(&payment_failed("neg-order", -5)).await;
    // 2. Non-ASCII, too long, and trailing-space event ids (ascii_bin columns).
    env.publish(&payment_failed("ünïcode-id", 900_001)).await;
    env.publish(&payment_failed(&huge_id, 900_002)).await;
    env.publish(&payment_failed("pads ", 900_003)).await;
    // 3. An unknown order whose id makes `dlq:{id}` longer than outbox.event_id.
    env.publish(&payment_failed(&long_id, 900_004)).await;
    // 4. The shell panics on this one (a failpoint): isolated, dead-lettered, saga quarantined.
    env.publish(&reserved("evil-panic", b as i64)).await;
    // 5. A reservation failure whose backorder rows exceed one statement's 65,535 placeholders.
    let shortages: Vec<Shortage> =
        (0..8_000).map(|i| Shortage { sku: format!("S{i}"), requested_qty: 2, available_qty: 1 }).collect();
    env.publish(&Message::from(InventoryReservationFailed {
        event_id: format!("big-{c}"),
        order_id: c as i64,
        occurred_at: ts(),
        tenant_region: "eu".into(),
        command_id: None,
        reason: "short".into(),
        shortages,
    }))
    .await;
    // And the partitions keep flowing: a good event after all of them applies.
    env.publish(&reserved(&format!("ok-{next}"), next as i64)).await;
    env.wait_state(next, "AWAITING_PAYMENT", T).await;
    env.wait_state(c, "PENDING_REVIEW", T).await;
    assert_eq!(
        env.count_for(
            "SELECT COUNT(*) FROM outbox WHERE aggregate_id = CAST(? AS CHAR) AND event_type = 'order.item.backordered.v1'",
            c
        )
        .await,
        8_000
    );

    eventually(T, "six dead letters published", || async {
        env.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'dead_letter' AND published_at IS NOT NULL").await
            == 6
    })
    .await;
    let dlq = env.read_topic(None).await;
    assert_eq!(dlq.len(), 6, "{:?}", dlq.iter().map(|r| &r.headers).collect::<Vec<_>>());
    assert!(dlq_error_containing(&dlq, "order_id must be a positive integer (got -5)").is_some());
    assert_eq!(
        dlq.iter().filter(|r| r.headers.get("dlq_error").is_some_and(|e| e.starts_with("event_id must be"))).count(),
        3,
        "non-ASCII, too long, trailing space"
    );
    let unknown = dlq_error_containing(&dlq, "unknown order 900004").expect("long id dead-lettered");
    assert_eq!(unknown.headers["event_id"], long_id, "the original id travels in the header");
    let panicked = dlq_error_containing(&dlq, "panicked").expect("panic isolated");
    assert_eq!(panicked.key.as_deref(), Some(b.to_string().as_str()));
    // The panicking event's saga is quarantined with the reason; nothing else is.
    assert_eq!(env.count("SELECT COUNT(*) FROM saga_instances WHERE quarantined_at IS NOT NULL").await, 1);
    assert_eq!(
        env.count_for("SELECT COUNT(*) FROM saga_instances WHERE order_id = ? AND quarantined_at IS NOT NULL", b).await,
        1
    );
    // Every event is in the inbox exactly once: a redelivery de-duplicates.
    assert_eq!(env.count("SELECT COUNT(*) FROM saga_inbox").await, 8);
    assert_eq!(metric(&d.metrics().await, "saga_dead_lettered_total"), 6.0);
}

fn metric(m: &str, name: &str) -> f64 {
    m.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Before: the poll thread blocked on a full worker queue, max.poll.interval
/// evicted the member, and SIGTERM could not end it.
#[tokio::test]
async fn a_database_outage_pauses_partitions_keeps_the_member_and_loses_nothing() {
    let env = SagaEnv::new().await;
    let (proxy, url) = in_front_of_database(&env.db_url).await;
    let mut d = env
        .start_daemon(&[
            ("ORDER_SAGA_DATABASE_URL", url.as_str()),
            ("ORDER_SAGA_DATABASE_ACQUIRE_TIMEOUT", "1s"),
            ("ORDER_SAGA_CONSUMER_BATCH_MAX", "1"),
            // An outage longer than this used to get the member evicted.
            ("ORDER_SAGA_KAFKA_PROPERTIES", "max.poll.interval.ms=7000"),
            ("ORDER_SAGA_SHUTDOWN_GRACE", "10s"),
        ])
        .await;
    let a = d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await;
    env.wait_state(a, "RESERVING_INVENTORY", T).await;
    eventually(T, "partitions assigned", || async {
        metric(&d.metrics().await, "saga_consumer_partitions_assigned") > 0.0
    })
    .await;

    proxy.cut();
    // A backlog on one partition, far beyond its worker's queue (4 messages).
    for i in 0..30 {
        env.publish(&payment_failed(&format!("lag-{i}"), 777_777)).await;
    }
    env.publish(&reserved(&format!("res-{a}"), a as i64)).await;
    eventually(T, "the backlogged partition is paused and the batch retried", || async {
        let m = d.metrics().await;
        metric(&m, "saga_consumer_partitions_paused") >= 1.0 && metric(&m, "saga_consumer_retries_total") >= 3.0
    })
    .await;
    // Longer than max.poll.interval.ms: the member must still be in the group.
    let started = tokio::time::Instant::now();
    eventually(Duration::from_secs(60), "an outage longer than max.poll.interval.ms", || async {
        started.elapsed() > Duration::from_secs(9)
    })
    .await;
    assert!(metric(&d.metrics().await, "saga_consumer_partitions_assigned") > 0.0, "still a member");
    assert!(!d.logs().contains("maximum poll interval"), "not evicted:\n{}", d.logs());
    proxy.restore();

    env.wait_state(a, "AWAITING_PAYMENT", T).await;
    eventually(T, "every backlogged event applied or dead-lettered", || async {
        env.count("SELECT COUNT(*) FROM saga_inbox WHERE event_id LIKE 'lag-%'").await == 30
    })
    .await;
    eventually(T, "partitions resumed", || async {
        metric(&d.metrics().await, "saga_consumer_partitions_paused") == 0.0
    })
    .await;

    // SIGTERM with the database down ends within the grace period.
    proxy.cut();
    env.publish(&payment_failed("during-shutdown", 777_777)).await;
    let before = metric(&d.metrics().await, "saga_consumer_retries_total");
    eventually(T, "retrying again", || async { metric(&d.metrics().await, "saga_consumer_retries_total") > before })
        .await;
    let status = tokio::time::timeout(Duration::from_secs(30), d.terminate()).await.expect("exited within the grace");
    assert!(status.code().is_some(), "exited, not killed: {status:?}");
    proxy.restore();
    assert_eq!(env.count("SELECT COUNT(*) FROM saga_inbox WHERE event_id = 'during-shutdown'").await, 0);
}

/// Before: a session whose client went silent inside a transaction kept its
/// row locks on the server for `wait_timeout` (8 hours): every retry that
/// needed one of its rows — the same `POST /orders` on its idempotency key —
/// waited for the lock and failed (chaos, "database connections silent
/// mid-query": an order never acknowledged in 90 s). Now the server ends such a
/// session at twice the client's deadline (`store::SessionLimits`) and rolls
/// its transaction back.
#[tokio::test]
async fn a_session_that_went_silent_in_a_transaction_gives_its_locks_back() {
    let (db, url) = fresh_db().await;
    sqlx::raw_sql("CREATE TABLE held (id INT PRIMARY KEY); INSERT INTO held VALUES (1)")
        .execute(&db.pool)
        .await
        .unwrap();
    let (proxy, proxied) = in_front_of_database(&url).await;
    let silent =
        order_saga::store::Db::connect_with_deadline(&proxied, 1, Duration::from_secs(10), Duration::from_secs(1))
            .await
            .unwrap();
    let mut tx = silent.begin().await.unwrap();
    sqlx::query("SELECT id FROM held WHERE id = 1 FOR UPDATE").fetch_one(&mut *tx).await.unwrap();
    proxy.silence();
    // The client gives up on it (as the deadline does); the server is not told.
    std::mem::forget(tx);

    let mut other = db.begin().await.unwrap();
    // Without the session limit this fails with 1205 once this wait ends.
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 20").execute(&mut *other).await.unwrap();
    let id: i32 = sqlx::query_scalar("SELECT id FROM held WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *other)
        .await
        .expect("the silent session's lock is released");
    assert_eq!(id, 1);
    other.rollback().await.unwrap();
    proxy.cut();
}

/// Before: the row was retried on every round, the rows behind it in id
/// order filled the read limit, and later rows of its order overtook it.
#[tokio::test]
async fn an_unencodable_outbox_row_holds_its_order_and_no_other() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[]).await;
    let body = order_body("c", "eu", &[("A", 1, "1.00")]);
    let (x, y) = (d.create_order(&body).await, d.create_order(&body).await);
    env.wait_outbox_drained(T).await;
    sqlx::query(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, created_at) \
         VALUES ('bad-row', 'order', ?, 'order.status.changed.v1', ?, '{}', '{}', ?, NOW(6))",
    )
    .bind(x.to_string())
    .bind(env.topics.of(MessageKind::OrderStatusChanged))
    .bind(x % 8)
    .execute(&env.db.pool)
    .await
    .unwrap();
    env.publish(&reserved(&format!("res-{x}"), x as i64)).await;
    env.publish(&reserved(&format!("res-{y}"), y as i64)).await;
    let authorize_published = |id: u64| {
        let env = &env;
        async move {
            env.count_for(
                "SELECT COUNT(*) FROM outbox WHERE aggregate_id = CAST(? AS CHAR) \
                 AND event_type = 'payment.authorize.v1' AND published_at IS NOT NULL",
                id,
            )
            .await
        }
    };
    eventually(T, "the other order's command published", || async { authorize_published(y).await == 1 }).await;
    env.wait_state(x, "AWAITING_PAYMENT", T).await;
    assert_eq!(authorize_published(x).await, 0, "held behind the bad row of its order");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM outbox WHERE event_id = 'bad-row' AND held_until > NOW(6) AND attempts = 1")
            .await,
        1,
        "held once, with backoff: no busy loop"
    );
    // An operator skips the row (marks it published): the order flows again.
    sqlx::query("UPDATE outbox SET published_at = NOW(6) WHERE event_id = 'bad-row'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    eventually(T, "the held order's command published", || async { authorize_published(x).await == 1 }).await;
}

/// A relay reads only shards whose lease it holds at that moment (database time).
#[tokio::test]
async fn outbox_reads_are_fenced_by_the_lease_held_now() {
    let (db, _) = fresh_db().await;
    order_saga::store::leases::ensure_shards(&db, 2).await.unwrap();
    sqlx::query("UPDATE outbox_leases SET owner = 'a', lease_until = NOW(6) + INTERVAL 1 MINUTE WHERE shard = 0")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, created_at) \
         VALUES ('e1', 'order', '2', 'order.created.v1', 't', '{}', '{}', 0, NOW(6))",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Both forms of the read: with the held-row rule and without.
    let pending = |owner: &'static str, skip_held: bool| {
        let pool = db.pool.clone();
        let windows = [0, 1].map(|shard| order_saga::store::outbox::ShardWindow { shard, limit: 10 });
        async move { order_saga::store::outbox::pending_ids(&pool, owner, &windows, skip_held).await.unwrap() }
    };
    for skip_held in [true, false] {
        assert_eq!(pending("a", skip_held).await.len(), 1, "the holder reads it");
        assert!(pending("b", skip_held).await.is_empty(), "nobody else does, whatever shards it believes it owns");
    }
    sqlx::query("UPDATE outbox_leases SET lease_until = NOW(6) - INTERVAL 1 SECOND WHERE shard = 0")
        .execute(&db.pool)
        .await
        .unwrap();
    for skip_held in [true, false] {
        assert!(pending("a", skip_held).await.is_empty(), "an expired lease fences its old holder");
    }
}

/// How long the latest hold lasts is what decides whether the relay's reads
/// need the held-row rule (`outbox::schedule`): asked of the table when a
/// relay gains a shard. Only the shard's lease holder can set rows aside, so
/// no hold can appear behind its back.
#[tokio::test]
async fn the_table_says_how_long_its_latest_hold_lasts() {
    use order_saga::store::outbox::{HOLD_MAX, defer, held_for, hold};
    let (db, _) = fresh_db().await;
    sqlx::query(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, \
         created_at, attempts) \
         VALUES ('e1', 'order', '1', 't', 't', '{}', '{}', 0, NOW(6), 0), ('e2', 'order', '2', 't', 't', '{}', '{}', 0, NOW(6), 9)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let id = |e: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, u64>("SELECT id FROM outbox WHERE event_id = ?")
                .bind(e)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (e1, e2) = (id("e1").await, id("e2").await);
    order_saga::store::leases::ensure_shards(&db, 1).await.unwrap();
    sqlx::query("UPDATE outbox_leases SET owner = 'a', lease_until = NOW(6) + INTERVAL 1 MINUTE")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(held_for(&db.pool).await.unwrap(), None, "nothing held");
    // Only the shard's lease holder sets its rows aside.
    defer(&db.pool, "b", &[e1], "learning").await.unwrap();
    hold(&db.pool, "b", &[e2], "too large").await.unwrap();
    assert_eq!(held_for(&db.pool).await.unwrap(), None, "fenced: b holds no lease");
    defer(&db.pool, "a", &[e1], "learning").await.unwrap();
    let deferred = held_for(&db.pool).await.unwrap().expect("a deferred row is held");
    assert!(deferred <= Duration::from_secs(1), "{deferred:?}");
    hold(&db.pool, "a", &[e2], "too large").await.unwrap();
    let held = held_for(&db.pool).await.unwrap().expect("a held row");
    assert!(held > Duration::from_secs(1) && held <= HOLD_MAX, "the latest hold, at most HOLD_MAX: {held:?}");
    sqlx::query("UPDATE outbox SET published_at = NOW(6)").execute(&db.pool).await.unwrap();
    assert_eq!(held_for(&db.pool).await.unwrap(), None, "published rows are not waiting");
}

/// Rows and index entries this connection's statements have read so far.
async fn handler_reads(conn: &mut sqlx::MySqlConnection) -> u64 {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SHOW SESSION STATUS LIKE 'Handler_read%'").fetch_all(conn).await.unwrap();
    rows.iter().map(|(_, v)| v.parse::<u64>().unwrap()).sum()
}

/// Shards 0–3 leased to relay `a`; 5,000 published rows, then 2,000
/// pending, in orders of 5 rows over the first `pending_shards` shards.
async fn outbox_with_a_backlog(pending_shards: u16) -> order_saga::store::Db {
    let (db, _) = fresh_db().await;
    order_saga::store::leases::ensure_shards(&db, 4).await.unwrap();
    sqlx::query("UPDATE outbox_leases SET owner = 'a', lease_until = NOW(6) + INTERVAL 1 MINUTE")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, \
         created_at, published_at) \
         SELECT CONCAT('e', seq), 'order', CAST(seq DIV 5 AS CHAR), 'order.created.v1', 't', '{}', '{}', \
         (seq DIV 5) MOD ?, NOW(6), IF(seq < 5000, NOW(6), NULL) FROM seq_0_to_6999",
    )
    .bind(pending_shards)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE TABLE outbox").execute(&db.pool).await.unwrap();
    db
}

/// Asking which shards have pending rows (what the relay does at its poll
/// interval, so that an idle relay reads nothing) is a dive per shard, not a
/// walk through the backlog: a `DISTINCT shard` over the pending range read
/// every pending row. Counted with the server's handler counters.
#[tokio::test]
async fn asking_which_shards_have_rows_costs_a_dive_per_shard_whatever_the_backlog() {
    let db = outbox_with_a_backlog(3).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let before = handler_reads(&mut conn).await;
    let mut shards = order_saga::store::outbox::pending_shards(&mut *conn, &[0, 1, 2, 3]).await.unwrap();
    let touched = handler_reads(&mut conn).await - before;
    shards.sort_unstable();
    assert_eq!(shards, vec![0, 1, 2], "shard 3 has published rows only");
    assert!(touched < 200, "{touched} index and row reads to find 3 shards among 2,000 pending rows");
    let none = order_saga::store::outbox::pending_shards(&mut *conn, &[3]).await.unwrap();
    assert_eq!(none, Vec::<u16>::new());
}

/// A relay read costs what it returns, not what is behind it: with thousands
/// of published rows retained and a backlog larger than the read, MariaDB
/// touches about the rows it returns. (One `IN` over the shards with one
/// `ORDER BY id LIMIT` walked every retained row; the relay fell further
/// behind the longer it was behind.) Counted with the server's own handler
/// counters, not timed.
#[tokio::test]
async fn an_outbox_read_costs_what_it_returns_whatever_the_backlog() {
    let db = outbox_with_a_backlog(4).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let windows = [0, 1, 2, 3].map(|shard| order_saga::store::outbox::ShardWindow { shard, limit: 25 });
    let mut touched = Vec::new();
    for skip_held in [true, false] {
        let before = handler_reads(&mut conn).await;
        let read = order_saga::store::outbox::pending_ids(&mut *conn, "a", &windows, skip_held).await.unwrap();
        touched.push(handler_reads(&mut conn).await - before);
        assert_eq!(read.len(), 100, "each shard's window is full");
        for shard in 0..4u16 {
            let ids: Vec<u64> = read.iter().filter(|(_, s)| *s == shard).map(|(id, _)| *id).collect();
            let oldest: Vec<u64> = sqlx::query_scalar(
                "SELECT id FROM outbox WHERE published_at IS NULL AND shard = ? ORDER BY id LIMIT 25",
            )
            .bind(shard)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            assert_eq!(ids, oldest, "shard {shard}: its oldest pending rows, in id order");
        }
    }
    // The statement itself, plus the handler counters' own query (a few dozen).
    for n in touched {
        assert!(n < 1_000, "{n} index and row reads for 100 rows, with 7,000 in the table");
    }
}

/// A rolling deploy: an old replica meets a saga a newer one wrote on a
/// definition version it has not loaded. It waits (the newer replica takes the
/// event) instead of quarantining the saga; only an explicit give-up quarantines.
#[tokio::test]
async fn an_old_replica_waits_for_a_newer_definition_version_instead_of_quarantining() {
    use order_saga::orchestrator::{LockMode, UnknownVersion};
    use order_saga::store::StoreError;
    let app = TestApp::new().await;
    let created = app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await;
    let id = created.json["order_id"].as_u64().unwrap();
    sqlx::query("UPDATE saga_instances SET definition_version = 99 WHERE order_id = ?")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let event = [inbound_of(&reserved(&format!("res-{id}"), id as i64))];
    let waited = app.sagas.apply(&app.db, &event, LockMode::Wait, UnknownVersion::Wait).await;
    match waited {
        Err(e @ StoreError::DefinitionNotLoaded { version: 99 }) => assert!(e.is_transient()),
        other => panic!("expected DefinitionNotLoaded, got {other:?}"),
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_instances WHERE quarantined_at IS NOT NULL").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_inbox").await, 0, "nothing recorded: the event is retried");
    // After the patience runs out, the consumer quarantines (the old behaviour).
    app.sagas.apply(&app.db, &event, LockMode::Wait, UnknownVersion::Quarantine).await.unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_instances WHERE quarantined_at IS NOT NULL").await, 1);
}

/// An inbox that forgets events while the topics still hold them would let a
/// replay apply an event twice (with new command ids): `serve` refuses it.
/// Where the broker does not report `retention.ms` (tansu 0.6.0 does not), the
/// daemon says it could not verify — never silently.
#[tokio::test]
async fn serve_refuses_an_inbox_that_forgets_before_the_topics_do() {
    let env = SagaEnv::new().await;
    let retention = order_saga::kafka::admin::retention_ms(&env.client, &env.topics.inbound()).await.unwrap();
    let reported = retention.iter().all(|(_, r)| r.is_some());
    // Async: the registry stand-in runs on this test's runtime.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-saga"));
    cmd.arg("serve").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env.daemon_env() {
        cmd.env(k, v);
    }
    if reported {
        let out = cmd.env("ORDER_SAGA_INBOX_RETENTION", "1s").output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("ORDER_SAGA_INBOX_RETENTION (1s) does not outlive the retention of"), "{stderr}");
        assert!(stderr.contains(env.topics.of(MessageKind::PaymentFailed)), "names the topic: {stderr}");
    } else {
        let log = std::env::temp_dir().join(format!("retention-{}.log", uuid::Uuid::new_v4().simple()));
        let mut child =
            cmd.env("ORDER_SAGA_INBOX_RETENTION", "1s").stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        eventually(T, "the daemon says the retention is not verified", || async {
            std::fs::read_to_string(&log).unwrap_or_default().contains("the inbox retention is not verified")
        })
        .await;
        let _ = child.kill().await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains(env.topics.of(MessageKind::PaymentFailed)), "names the topics: {text}");
    }
}

/// Timers are armed with the database's clock, the clock that fires them: a
/// host whose clock is off can neither fire a timeout early nor late. Here the
/// database's clock is an hour ahead of the application's (MariaDB's session
/// `timestamp`, on the pool's only connection).
#[tokio::test]
async fn timers_are_armed_with_the_database_clock() {
    let app = TestApp::new().await;
    let created = app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await;
    let id = created.json["order_id"].as_u64().unwrap();
    let skewed = skewed_db(&app).await;
    let event = [inbound_of(&reserved(&format!("res-{id}"), id as i64))];
    app.sagas.apply_batch(&skewed, &event, order_saga::orchestrator::LockMode::Wait).await.unwrap();
    let (from_db_now, from_app_now): (i64, i64) = sqlx::query_as(
        "SELECT CAST(TIMESTAMPDIFF(SECOND, NOW(6), due_at) AS SIGNED), \
         CAST(TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(6) - INTERVAL 3600 SECOND, due_at) AS SIGNED) \
         FROM saga_timers WHERE order_id = ?",
    )
    .bind(id)
    .fetch_one(&skewed.pool)
    .await
    .unwrap();
    let timeout = 15 * 60;
    assert!((timeout - 5..=timeout).contains(&from_db_now), "due {from_db_now} s after the database's now");
    assert!(from_app_now > timeout + 3000, "not armed with the application's clock: {from_app_now} s");
}

/// A connection whose session clock runs an hour ahead of this host's, to
/// tell the two clocks apart.
async fn skewed_db(app: &TestApp) -> order_saga::store::Db {
    let name: String = sqlx::query_scalar("SELECT DATABASE()").fetch_one(&app.db.pool).await.unwrap();
    let url = format!("{}/{name}", env().db_base);
    let skewed = order_saga::store::Db::connect(&url, 1, Duration::from_secs(10)).await.unwrap();
    sqlx::query("SET timestamp = UNIX_TIMESTAMP() + 3600").execute(&skewed.pool).await.unwrap();
    skewed
}

/// Seconds from the (skewed) database's now to a timer's due time.
async fn due_in(db: &order_saga::store::Db, order_id: u64, timer: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT CAST(TIMESTAMPDIFF(SECOND, NOW(6), due_at) AS SIGNED) FROM saga_timers \
         WHERE order_id = ? AND timer_name = ?",
    )
    .bind(order_id)
    .bind(timer)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// A timer armed by the start transition (order creation reads no clock from
/// the database) is due by the database's clock: the host's plays no part.
#[tokio::test]
async fn timers_armed_at_start_are_due_by_the_database_clock() {
    let app = TestApp::new().await;
    // order.toml, with the payment timeout armed when the saga starts.
    let dir = std::env::temp_dir().join(format!("sagas-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string("sagas/order.toml").unwrap();
    let start = "to = \"RESERVING_INVENTORY\"\nrun = \"reserve_inventory\"\n";
    assert!(text.contains(start), "order.toml's [start] changed; update this test");
    // The states it can be entered in with the timer armed must accept its firing.
    let armed = text
        .replacen(start, &format!("{start}arm = [\"payment_timeout\"]\n"), 1)
        .replace(
            "ignore = [\"payment.authorized.v1\", \"payment.failed.v1\"]",
            "ignore = [\"payment.authorized.v1\", \"payment.failed.v1\", \"timer.payment_timeout\"]",
        )
        .replace(
            "ignore = [\"inventory.reserved.v1\", \"inventory.reservation.failed.v1\", \"payment.authorized.v1\", \"payment.failed.v1\"]\n",
            "ignore = [\"inventory.reserved.v1\", \"inventory.reservation.failed.v1\", \"payment.authorized.v1\", \"payment.failed.v1\", \"timer.payment_timeout\"]\n",
        );
    std::fs::write(dir.join("order.toml"), armed).unwrap();
    let catalog = order_saga::saga_files::load_catalog(&dir, &Default::default()).expect("valid definition");
    std::fs::remove_dir_all(&dir).unwrap();
    let sagas = order_saga::orchestrator::SagaStore::new(std::sync::Arc::new(catalog), app.state.outbox.clone());

    let skewed = skewed_db(&app).await;
    let body = order_body("c", "eu", &[("A", 1, "1.00")]);
    let shared = order_saga::orchestrator::group_commit::Shared {
        db: skewed.clone(),
        outbox: app.state.outbox.clone(),
        sagas: Some(sagas),
        actor: "api",
    };
    let req = order_saga::orchestrator::group_commit::CreateRequest {
        order: order_saga::domain::NewOrder::from_json(&body).unwrap(),
        key: key(),
        fingerprint: order_saga::store::idempotency::fingerprint(&body),
        trace: None,
        actor: None,
    };
    let outcome = order_saga::orchestrator::group_commit::create_many(&shared, &[req]).await.remove(0).unwrap();
    let order_saga::orchestrator::order_api::CreateOutcome::Created { order_id, .. } = outcome else {
        panic!("expected Created, got {outcome:?}")
    };
    let due = due_in(&skewed, order_id.get(), "payment_timeout").await;
    let timeout = 15 * 60;
    assert!((timeout - 5..=timeout).contains(&due), "due {due} s after the database's now, not {timeout}");
}

/// `reschedule_timer after=30m` counts from the database's now: with this
/// host's clock an hour behind, it must not fire at once.
#[tokio::test]
async fn a_rescheduled_timer_is_due_by_the_database_clock() {
    let app = TestApp::new().await;
    let created = app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await;
    let id = created.json["order_id"].as_u64().unwrap();
    let event = [inbound_of(&reserved(&format!("res-{id}"), id as i64))];
    app.sagas.apply_batch(&app.db, &event, order_saga::orchestrator::LockMode::Wait).await.unwrap();
    let version: u32 = sqlx::query_scalar("SELECT version FROM saga_instances WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    let skewed = skewed_db(&app).await;
    let ops = order_saga::ops::Ops::new(skewed.clone(), app.sagas.clone(), None, None);
    let req = order_saga::ops::Request {
        order_id: crate::helpers::oid(id),
        action: order_saga::ops::Action::RescheduleTimer {
            timer: "payment_timeout".into(),
            at: None,
            after: Some("30m".into()),
        },
        expected_version: order_saga::domain::SagaVersion(version),
        actor: "ops:test".into(),
        reason: "clock test".into(),
        dry_run: false,
        job_id: None,
    };
    ops.act(&req).await.unwrap();
    let due = due_in(&skewed, id, "payment_timeout").await;
    assert!((1795..=1800).contains(&due), "due {due} s after the database's now, not 1800");
}

/// Lag gauges of partitions a replica no longer owns are removed at revoke:
/// a sum over replicas counts each partition once.
#[tokio::test]
async fn lag_gauges_of_revoked_partitions_go_away() {
    let env = SagaEnv::new().await;
    let series = |m: &str| m.lines().filter(|l| l.starts_with("saga_consumer_lag{")).count() as f64;
    let d1 = env.start_daemon(&[]).await;
    // Something on every partition (undecodable: dead-lettered), so that each
    // has a committed offset and therefore a lag.
    for kind in [
        MessageKind::InventoryReserved,
        MessageKind::InventoryReservationFailed,
        MessageKind::PaymentAuthorized,
        MessageKind::PaymentFailed,
    ] {
        for key in 1..=24 {
            env.publish_raw(kind, &key.to_string(), b"\x00junk", &[]).await;
        }
    }
    // Every inbound partition has a lag series on the only replica.
    let total = (env.topics.inbound().len() as i32 * PARTITIONS) as f64;
    eventually(T, "lag series for every partition", || async { series(&d1.metrics().await) == total }).await;
    let d2 = env.start_daemon(&[]).await;
    eventually(T, "the second replica owns partitions", || async {
        metric(&d2.metrics().await, "saga_consumer_partitions_assigned") > 0.0
    })
    .await;
    eventually(T, "the first replica reports lag only for what it still owns", || async {
        let m = d1.metrics().await;
        series(&m) == metric(&m, "saga_consumer_partitions_assigned") && series(&m) < total
    })
    .await;
    drop(d2);
    drop(d1);
}

/// Rows whose topic's partition count cannot be learned (here: a topic that
/// does not exist) leave the relay's pending window while they wait, so the
/// rest of their shard is still published (review #15).
#[tokio::test]
async fn rows_waiting_for_a_partition_count_do_not_starve_their_shard() {
    let env = SagaEnv::new().await;
    // One shard, a window of five rows: twenty waiting rows would fill it.
    let d = env.start_daemon(&[("ORDER_SAGA_OUTBOX_SHARDS", "1"), ("ORDER_SAGA_OUTBOX_BATCH", "5")]).await;
    let first = d.create_order(&order_body("c", "eu-west", &[("A", 1, "1.00")])).await;
    env.wait_outbox_drained(T).await;
    // Twenty copies of its order.created.v1, regionally placed, on a topic
    // whose partition count can never be learned: its name is not a legal
    // topic name (a missing topic would be created by the producer's
    // metadata request on this broker).
    let nowhere = format!("{}.no such topic!", env.prefix);
    for i in 0..20 {
        sqlx::query(
            "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, \
             created_at, tenant_region) \
             SELECT CONCAT('nowhere-', ?), aggregate_type, aggregate_id, event_type, ?, payload, headers, 0, NOW(6), \
             'eu-west' FROM outbox WHERE aggregate_id = CAST(? AS CHAR) AND event_type = 'order.created.v1' LIMIT 1",
        )
        .bind(i)
        .bind(&nowhere)
        .bind(first)
        .execute(&env.db.pool)
        .await
        .unwrap();
    }
    let second = d.create_order(&order_body("c", "eu-west", &[("A", 1, "1.00")])).await;
    eventually(T, "the later order's rows published past the waiting ones", || async {
        env.count_for(
            "SELECT COUNT(*) FROM outbox WHERE aggregate_id = CAST(? AS CHAR) AND published_at IS NULL",
            second,
        )
        .await
            == 0
    })
    .await;
    // The waiting rows are neither lost nor counted as failed attempts.
    let waiting: (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(attempts), 0) AS SIGNED) FROM outbox \
         WHERE event_id LIKE 'nowhere-%' AND published_at IS NULL",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(waiting, (20, 0), "(rows still waiting, attempts counted)");
}

/// A row the producer can never deliver as it is (larger than the producer's
/// `message.max.bytes`) is held with backoff instead of being sent every
/// round, and its order's later rows wait behind it; other orders go on
/// (review #8).
#[tokio::test]
async fn an_undeliverable_row_is_held_and_its_orders_later_rows_wait() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[("ORDER_SAGA_KAFKA_PROPERTIES", "message.max.bytes=4000")]).await;
    // 100 items with 64-character SKUs: about 8 kB of order.created.v1.
    let skus: Vec<String> = (0..100).map(|i| format!("{i:0>64}")).collect();
    let items: Vec<(&str, u32, &str)> = skus.iter().map(|s| (s.as_str(), 1, "1.00")).collect();
    let big = d.create_order(&order_body("c", "eu-west", &items)).await;
    let small = d.create_order(&order_body("c", "eu-west", &[("A", 1, "1.00")])).await;
    eventually(T, "the small order's rows published", || async {
        env.count_for(
            "SELECT COUNT(*) FROM outbox WHERE aggregate_id = CAST(? AS CHAR) AND published_at IS NULL",
            small,
        )
        .await
            == 0
    })
    .await;
    eventually(T, "the big order's first row held, with its reason", || async {
        env.count_for(
            "SELECT COUNT(*) FROM outbox WHERE aggregate_id = CAST(? AS CHAR) AND held_until > NOW(6) \
             AND attempts >= 1 AND LOWER(last_error) LIKE '%too large%'",
            big,
        )
        .await
            >= 1
    })
    .await;
    let sent = env
        .count_for("SELECT COUNT(*) FROM outbox WHERE aggregate_id = CAST(? AS CHAR) AND published_at IS NOT NULL", big)
        .await;
    assert_eq!(sent, 0, "nothing of the big order went out ahead of its held row");
}
