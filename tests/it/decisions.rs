//! Decisions under time, ordering and dependency faults, against the real
//! database (no broker): stale replies, mismatched payments, event-time
//! timers, old replicas, poison released twice, console sessions after a
//! token rotation, a refusal the server did not mean.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::Method;
use order_saga::contracts::*;
use order_saga::orchestrator::InboundOutcome;
use order_saga::store::watermarks::{self, Advance};
use order_saga::timers::{self, TimerPolicy};
use serde_json::{Value, json};

use crate::helpers::*;

const AUTH: (&str, &str) = ("authorization", "Bearer test-ops-token-0123456789");

fn ts() -> TimestampMicros {
    TimestampMicros::from_datetime(chrono::Utc::now())
}

async fn order(app: &TestApp) -> i64 {
    let r = app.create_order(&key(), &order_body("c", "eu-west", &[("A", 2, "11.25")])).await;
    r.expect(201);
    r.json["order_id"].as_i64().unwrap()
}

/// An order whose saga waits for its payment (its timer armed).
async fn awaiting_payment(app: &TestApp) -> i64 {
    let id = order(app).await;
    app.deliver(&[reserved(id, &format!("r-{id}"), None)]).await;
    id
}

fn reserved(id: i64, event: &str, command: Option<String>) -> Message {
    Message::from(InventoryReserved {
        event_id: event.into(),
        order_id: id,
        occurred_at: ts(),
        tenant_region: "eu-west".into(),
        command_id: command,
    })
}

fn failed(id: i64, event: &str, command: Option<String>) -> Message {
    Message::from(InventoryReservationFailed {
        event_id: event.into(),
        order_id: id,
        occurred_at: ts(),
        tenant_region: "eu-west".into(),
        command_id: command,
        reason: "OUT_OF_STOCK".into(),
        shortages: vec![Shortage { sku: "A".into(), requested_qty: 2, available_qty: 0 }],
    })
}

fn authorized(id: i64, event: &str, amount: &str, currency: &str) -> Message {
    Message::from(PaymentAuthorized {
        event_id: event.into(),
        order_id: id,
        occurred_at: ts(),
        tenant_region: "eu-west".into(),
        payment_intent_id: format!("pi-{id}-1"),
        amount: amount.into(),
        currency: currency.into(),
    })
}

async fn act(app: &TestApp, id: i64, body: Value) -> Resp {
    app.post_json(&format!("/ops/sagas/{id}/actions"), &[AUTH], &body).await
}

async fn state_of(app: &TestApp, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM saga_instances WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

fn cmd(id: i64, n: u32) -> Option<String> {
    Some(format!("{id}:reserve_inventory:reserve:{n}"))
}

#[tokio::test]
async fn a_late_answer_to_the_first_reservation_moves_nothing_after_a_retry() {
    let app = TestApp::new().await;
    let id = order(&app).await;
    app.deliver(&[failed(id, "f1", cmd(id, 1))]).await;
    assert_eq!(state_of(&app, id).await, "PENDING_REVIEW");
    act(&app, id, json!({"action": "force", "event": "reservation.retry.requested", "expected_version": 2, "actor": "ops:bob", "reason": "stock arrived"}))
        .await
        .expect(200);
    assert_eq!(state_of(&app, id).await, "RESERVING_INVENTORY");

    // A participant answers reserve #1 again, with new event ids: both answers are stale.
    let outbox_before = app.count("SELECT COUNT(*) FROM outbox").await;
    let outcomes = app.deliver(&[failed(id, "f1-again", cmd(id, 1)), reserved(id, "r1-late", cmd(id, 1))]).await;
    assert!(outcomes.iter().all(|o| matches!(o, InboundOutcome::StaleReply { .. })), "{outcomes:?}");
    assert_eq!(state_of(&app, id).await, "RESERVING_INVENTORY", "waiting for reserve #2 still");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, outbox_before, "nothing sent: no release, no authorize");
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_inbox WHERE outcome = 'stale_reply'").await, 2, "recorded");
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM saga_transitions WHERE event_id = 'r1-late' AND from_state = to_state")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(
        reason.starts_with("STALE_REPLY") && reason.contains(&format!("{id}:reserve_inventory:reserve:2")),
        "{reason}"
    );

    // The answer to reserve #2 moves it.
    let outcomes = app.deliver(&[reserved(id, "r2", cmd(id, 2))]).await;
    assert!(matches!(&outcomes[0], InboundOutcome::Applied { to, .. } if to == "AWAITING_PAYMENT"), "{outcomes:?}");
}

#[tokio::test]
async fn an_authorization_for_another_amount_or_currency_never_confirms() {
    let app = TestApp::new().await;
    for (amount, currency) in [("0.01", "USD"), ("22.50", "USD"), ("22.49", "EUR")] {
        let id = order(&app).await;
        app.deliver(&[reserved(id, &format!("r-{id}"), None)]).await;
        let outcomes = app.deliver(&[authorized(id, &format!("a-{id}"), amount, currency)]).await;
        assert!(matches!(&outcomes[0], InboundOutcome::Applied { to, .. } if to == "CANCELLED"), "{outcomes:?}");
        let (status, reason): (String, Option<String>) = sqlx::query_as(
            "SELECT CAST(o.status AS CHAR), h.reason_code FROM orders o JOIN order_status_history h ON h.order_id = o.order_id \
             WHERE o.order_id = ? ORDER BY h.history_id DESC LIMIT 1",
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(
            (status.as_str(), reason.as_deref()),
            ("CANCELLED", Some("PAYMENT_MISMATCH")),
            "{amount} {currency}"
        );
        assert_eq!(outbox_of(&app.db, id, MessageKind::PaymentVoid).await.len(), 1, "the authorization is voided");
        assert_eq!(outbox_of(&app.db, id, MessageKind::OrderAttentionRequired).await.len(), 1, "a person is told");
    }
    // The order's own amount, written differently, confirms.
    let id = awaiting_payment(&app).await;
    app.deliver(&[authorized(id, &format!("a-{id}"), "22.5", "EUR")]).await;
    assert_eq!(state_of(&app, id).await, "COMPLETED");
}

fn policy() -> TimerPolicy {
    TimerPolicy {
        event_time: true,
        allowed_lateness: Duration::from_secs(2),
        max_defer: Duration::from_secs(3600),
        topics: BTreeMap::from([
            (MessageKind::PaymentAuthorized, "t.pay.ok".to_owned()),
            (MessageKind::PaymentFailed, "t.pay.failed".to_owned()),
            (MessageKind::InventoryReserved, "t.inv.ok".to_owned()),
        ]),
    }
}

async fn due_seconds_ago(app: &TestApp, id: i64, secs: i64) -> chrono::DateTime<chrono::Utc> {
    sqlx::query("UPDATE saga_timers SET due_at = NOW(6) - INTERVAL ? SECOND WHERE order_id = ?")
        .bind(secs)
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT due_at FROM saga_timers WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn watermark(app: &TestApp, topic: &str, partition: i32, through: chrono::DateTime<chrono::Utc>) {
    watermarks::advance(&app.db.pool, &[Advance { topic: topic.into(), partition, through, next_offset: 1 }])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_due_timer_waits_until_the_partitions_that_could_answer_it_are_consumed_past_it() {
    let app = TestApp::new().await;
    let id = awaiting_payment(&app).await;
    let due = due_seconds_ago(&app, id, 10).await;
    let secs = chrono::Duration::seconds;
    // The authorized topic is read past the due time; one payment.failed partition is not.
    watermark(&app, "t.pay.ok", 0, due + secs(60)).await;
    watermark(&app, "t.pay.failed", 0, due + secs(60)).await;
    watermark(&app, "t.pay.failed", 1, due - secs(30)).await;
    // A topic that cannot move AWAITING_PAYMENT (inventory replies are ignored there) holds nothing.
    watermark(&app, "t.inv.ok", 0, due - secs(3000)).await;
    let r = timers::sweep(&app.db, &app.sagas, 100, &policy(), None).await.unwrap();
    assert_eq!((r.fired, r.deferred), (0, 1), "{r:?}");
    assert!((31.0..=33.0).contains(&r.max_watermark_lag_seconds), "{r:?}");
    assert_eq!(state_of(&app, id).await, "AWAITING_PAYMENT");
    // Within the allowed lateness is not enough…
    watermark(&app, "t.pay.failed", 1, due + secs(1)).await;
    assert_eq!(timers::sweep(&app.db, &app.sagas, 100, &policy(), None).await.unwrap().fired, 0);
    // …past it is.
    watermark(&app, "t.pay.failed", 1, due + secs(3)).await;
    let r = timers::sweep(&app.db, &app.sagas, 100, &policy(), None).await.unwrap();
    assert_eq!((r.fired, r.deferred), (1, 0), "{r:?}");
    assert_eq!(state_of(&app, id).await, "CANCELLED");
}

#[tokio::test]
async fn a_payment_consumed_before_the_deferred_timer_fires_confirms_the_order() {
    let app = TestApp::new().await;
    let id = awaiting_payment(&app).await;
    let due = due_seconds_ago(&app, id, 30).await;
    // The daemon was down: the payment topic is consumed only up to before the deadline.
    watermark(&app, "t.pay.ok", 0, due - chrono::Duration::seconds(20)).await;
    assert_eq!(timers::sweep(&app.db, &app.sagas, 100, &policy(), None).await.unwrap().deferred, 1);
    // The consumer catches up and applies the authorization produced in time.
    app.deliver(&[authorized(id, "a-in-time", "22.50", "EUR")]).await;
    watermark(&app, "t.pay.ok", 0, due + chrono::Duration::seconds(60)).await;
    let r = timers::sweep(&app.db, &app.sagas, 100, &policy(), None).await.unwrap();
    assert_eq!((r.fired, r.deferred), (0, 0), "the timer was disarmed by the payment: {r:?}");
    assert_eq!(state_of(&app, id).await, "COMPLETED");
}

#[tokio::test]
async fn a_partition_nobody_consumes_holds_a_timer_only_up_to_the_bound() {
    let app = TestApp::new().await;
    let id = awaiting_payment(&app).await;
    due_seconds_ago(&app, id, 7200).await;
    watermarks::ensure(&app.db.pool, &[("t.pay.ok".into(), 0)]).await.unwrap();
    let r = timers::sweep(&app.db, &app.sagas, 100, &policy(), None).await.unwrap();
    assert_eq!((r.fired, r.fired_past_bound), (1, 1), "{r:?}");
    assert_eq!(state_of(&app, id).await, "CANCELLED");
}

#[tokio::test]
async fn an_old_replica_never_sweeps_a_saga_of_a_version_it_has_not_loaded() {
    let app = TestApp::new().await;
    let id = awaiting_payment(&app).await;
    sqlx::query("UPDATE saga_instances SET definition_version = 99 WHERE order_id = ?")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    due_seconds_ago(&app, id, 1).await;
    let r = timers::sweep(&app.db, &app.sagas, 100, &TimerPolicy::processing_time(), None).await.unwrap();
    assert_eq!((r.fired, r.skipped), (0, 0), "{r:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_instances WHERE quarantined_at IS NOT NULL").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_timers").await, 1, "the timer waits for a replica that has v99");
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_parked_events").await, 0);
}

#[tokio::test]
async fn releasing_an_event_that_is_still_poison_quarantines_again_instead_of_failing() {
    let app = TestApp::new().await;
    let id = awaiting_payment(&app).await;
    // The order moved under the saga's feet: the confirmation is refused by the order table.
    sqlx::query("UPDATE orders SET status = 'RETURNED' WHERE order_id = ?")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let outcomes = app.deliver(&[authorized(id, "a-poison", "22.50", "EUR")]).await;
    assert!(matches!(&outcomes[0], InboundOutcome::DeadLettered { .. }), "{outcomes:?}");
    let version: u32 = sqlx::query_scalar("SELECT version FROM saga_instances WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let r = act(
        &app,
        id,
        json!({"action": "release", "expected_version": version, "actor": "ops:e", "reason": "try again"}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.json);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'dead_letter'").await,
        2,
        "a second dead-letter copy, under its own id"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_instances WHERE quarantined_at IS NOT NULL").await, 1);
}

#[tokio::test]
async fn a_console_session_ends_when_the_ops_token_is_rotated() {
    let app = TestApp::new().await;
    let r = app.post_json("/ops/ui/session", &[], &json!({"token": OPS_TOKEN, "actor": "ops:alice"})).await;
    r.expect(200);
    let cookie = r.headers.get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    let csrf = r.json["csrf_token"].as_str().unwrap().to_owned();
    let headers = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    app.call(Method::GET, "/ops/overview", &headers, None).await.expect(200);
    // The same database, the token rotated.
    let mut rotated = TestApp::new().await;
    rotated.db = app.db.clone();
    rotated.state.db = app.db.clone();
    if let Some(ops) = rotated.state.ops.as_mut() {
        ops.token = Some("rotated-ops-token-9876543210".into());
    }
    rotated.router = order_saga::http::router(rotated.state.clone());
    rotated.call(Method::GET, "/ops/overview", &headers, None).await.expect_error(401, "unauthorized");
    rotated
        .call(Method::GET, "/ops/ui/session", &[("cookie", cookie.as_str())], None)
        .await
        .expect_error(401, "unauthorized");
}

/// An error code the server means as passing, but that the transient list does
/// not know: the single event is refused, confirmed with backoff, and applied
/// on the retry — not dead-lettered with its saga quarantined.
#[tokio::test]
async fn a_refusal_the_server_did_not_mean_does_not_dead_letter_a_valid_event() {
    use order_saga::kafka::consumer::BatchHandler;
    let app = TestApp::new().await;
    let id = order(&app).await;
    // The next inbox insert fails once (SQLSTATE 45000, error 1644: not a known
    // transient code). The counter is a MEMORY table: the failed statement's
    // rollback does not undo its decrement.
    sqlx::raw_sql("CREATE TABLE fail_once (n INT NOT NULL) ENGINE = MEMORY; INSERT INTO fail_once VALUES (1)")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER inbox_fails_once BEFORE INSERT ON saga_inbox FOR EACH ROW BEGIN \
           IF (SELECT n FROM fail_once) > 0 THEN \
             UPDATE fail_once SET n = n - 1; \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'passing trouble'; \
           END IF; \
         END",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (url, _registry) = order_saga::devtools::registry::spawn_local().await.unwrap();
    let codec = order_saga::codec::Codec::new(&url, Duration::from_secs(5)).unwrap();
    let topics = order_saga::config::Topics::with_prefix("");
    let reply = reserved(id, "r-refused-once", cmd(id, 1));
    let topic = topics.of(MessageKind::InventoryReserved).to_owned();
    let payload = codec.encode(&reply, &topic).await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = order_saga::telemetry::metrics::Metrics::register(&mut registry);
    // Through the group committer, as `serve` runs it.
    let limits = order_saga::kafka::inbound::GroupLimits {
        max_runs: 16,
        max_events: 200,
        in_flight: 2,
        linger: std::time::Duration::ZERO,
    };
    let handler = order_saga::kafka::inbound::EventHandler {
        db: app.db.clone(),
        sagas: app.sagas.clone(),
        codec,
        topics,
        metrics: metrics.clone(),
        relay_wakeup: std::sync::Arc::new(order_saga::store::outbox::RelayWakeup::default()),
        version_patience: Duration::from_secs(60),
        group_commit: order_saga::kafka::inbound::GroupCommit::spawn(&app.db, &app.sagas, &metrics, limits),
    };
    let msg = rdkafka::message::OwnedMessage::new(
        Some(payload),
        Some(id.to_string().into_bytes()),
        topic,
        rdkafka::Timestamp::now(),
        0,
        0,
        None,
    );
    handler.handle(&[msg], tokio_util::sync::CancellationToken::new()).await.unwrap();
    assert_eq!(app.count("SELECT n FROM fail_once").await, 0, "the refusal happened");
    assert_eq!(state_of(&app, id).await, "AWAITING_PAYMENT", "applied on the retry");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'dead_letter'").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_instances WHERE quarantined_at IS NOT NULL").await, 0);
}

/// Prepared-statement executions on the one connection of `db` so far.
async fn executions(db: &order_saga::store::Db) -> i64 {
    let (_, n): (String, String) =
        sqlx::query_as("SHOW SESSION STATUS LIKE 'Com_stmt_execute'").fetch_one(&db.pool).await.unwrap();
    n.parse().unwrap()
}

/// Sweeps `ids`' due timers on a one-connection pool: (fired, statements executed).
async fn sweep_counting(app: &TestApp, ids: &[i64]) -> (u32, i64) {
    for &id in ids {
        due_seconds_ago(app, id, 10).await;
    }
    let name: String = sqlx::query_scalar("SELECT DATABASE()").fetch_one(&app.db.pool).await.unwrap();
    let one =
        order_saga::store::Db::connect(&format!("{}/{name}", env().db_base), 1, Duration::from_secs(10)).await.unwrap();
    let processing_time = TimerPolicy { event_time: false, ..policy() };
    let before = executions(&one).await;
    let r = timers::sweep(&one, &app.sagas, 100, &processing_time, None).await.unwrap();
    // Less the `SHOW` itself, which the server counts as it runs.
    let statements = executions(&one).await - before - 1;
    (r.fired, statements)
}

#[tokio::test]
async fn the_sweeper_fires_a_batch_of_timers_in_as_many_statements_as_one() {
    let app = TestApp::new().await;
    let first = awaiting_payment(&app).await;
    let (fired, one) = sweep_counting(&app, &[first]).await;
    assert_eq!(fired, 1);
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(awaiting_payment(&app).await);
    }
    let (fired, twelve) = sweep_counting(&app, &ids).await;
    assert_eq!(fired, 12);
    assert_eq!(twelve, one, "the due timers of a batch are read in one statement, not one per firing");
    for id in [first].iter().chain(&ids) {
        assert_eq!(state_of(&app, *id).await, "CANCELLED");
    }
}
