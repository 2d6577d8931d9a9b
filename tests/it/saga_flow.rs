//! The order saga end to end: the real daemon binary, the real database and
//! broker, participants played by the simulator or by the test itself.

use std::collections::HashSet;
use std::time::Duration;

use order_saga::contracts::*;

use crate::daemon::*;
use crate::helpers::*;

const T: Duration = Duration::from_secs(60);

fn ts() -> TimestampMicros {
    TimestampMicros::from_datetime(chrono::Utc::now())
}

fn command_ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r.msg.as_ref()? {
            Message::InventoryReserve(c) => Some(c.command_id.clone()),
            Message::InventoryRelease(c) => Some(c.command_id.clone()),
            Message::PaymentAuthorize(c) => Some(c.command_id.clone()),
            Message::PaymentVoid(c) => Some(c.command_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn happy_path_confirms_the_order_and_publishes_every_message_once() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[]).await;
    let _sim = env.simulator(sim_args()).await;
    let id = d.create_order(&order_body("c-1", "eu-west", &[("A", 2, "19.99")])).await;
    env.wait_state(id, "COMPLETED", T).await;
    assert_eq!(env.order_status(id).await, "CONFIRMED");
    env.wait_outbox_drained(T).await;
    assert_eq!(env.count_for("SELECT COUNT(*) FROM saga_timers WHERE order_id = ?", id).await, 0, "timer disarmed");

    let created = env.read_topic(Some(MessageKind::OrderCreated)).await;
    assert_eq!(created.len(), 1);
    let rec = &created[0];
    assert_eq!(rec.key.as_deref(), Some(id.to_string().as_str()), "key = order id");
    let Some(Message::OrderCreated(m)) = &rec.msg else { panic!("not an OrderCreated: {rec:?}") };
    assert_eq!((m.order_id, m.total_amount.as_str(), m.tenant_region.as_str()), (id as i64, "39.98", "eu-west"));
    assert_eq!(rec.headers["event_id"], m.event_id);
    assert_eq!(rec.headers["event_type"], "order.created.v1");
    assert!(order_saga::telemetry::trace_context::TraceContext::extract(&rec.headers["traceparent"], None).is_some());

    let reserve = env.read_topic(Some(MessageKind::InventoryReserve)).await;
    assert_eq!(command_ids(&reserve), vec![format!("{id}:reserve_inventory:reserve:1")]);
    let authorize = env.read_topic(Some(MessageKind::PaymentAuthorize)).await;
    assert_eq!(command_ids(&authorize), vec![format!("{id}:authorize_payment:authorize:1")]);
    let changed = env.read_topic(Some(MessageKind::OrderStatusChanged)).await;
    assert_eq!(changed.len(), 1);
    let Some(Message::OrderStatusChanged(c)) = &changed[0].msg else { panic!() };
    assert_eq!(
        (c.from_status.as_str(), c.to_status.as_str(), c.reason_code.as_deref()),
        ("PENDING", "CONFIRMED", Some("PAYMENT_AUTHORIZED"))
    );
    assert!(env.read_topic(Some(MessageKind::InventoryRelease)).await.is_empty());
}

#[tokio::test]
async fn payment_failure_compensates_and_cancels() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[]).await;
    let _sim = env.simulator(sim_args()).await;
    let id = d.create_order(&order_body("decline-1", "eu", &[("A", 1, "5.00")])).await;
    env.wait_state(id, "CANCELLED", T).await;
    assert_eq!(env.order_status(id).await, "CANCELLED");
    assert_eq!(cancel_reason(&env, id).await.as_deref(), Some("PAYMENT_FAILED"));
    env.wait_outbox_drained(T).await;
    assert_eq!(
        command_ids(&env.read_topic(Some(MessageKind::InventoryRelease)).await),
        vec![format!("{id}:reserve_inventory:release:1")]
    );
    assert!(env.read_topic(Some(MessageKind::PaymentVoid)).await.is_empty(), "nothing was authorized");
    assert_eq!(env.count_for("SELECT COUNT(*) FROM saga_timers WHERE order_id = ?", id).await, 0);
}

#[tokio::test]
async fn payment_timeout_cancels_releases_and_voids() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[("ORDER_SAGA_TIMERS", "payment_timeout=2s")]).await;
    let _sim = env.simulator(sim_args()).await;
    let id = d.create_order(&order_body("silent-1", "eu", &[("A", 1, "5.00")])).await;
    env.wait_state(id, "AWAITING_PAYMENT", T).await;
    assert_eq!(
        env.count_for("SELECT COUNT(*) FROM saga_timers WHERE order_id = ?", id).await,
        1,
        "timer armed in the same transaction"
    );
    env.wait_state(id, "CANCELLED", T).await;
    assert_eq!(cancel_reason(&env, id).await.as_deref(), Some("PAYMENT_TIMEOUT"));
    env.wait_outbox_drained(T).await;
    assert_eq!(
        command_ids(&env.read_topic(Some(MessageKind::InventoryRelease)).await),
        vec![format!("{id}:reserve_inventory:release:1")]
    );
    let voids = env.read_topic(Some(MessageKind::PaymentVoid)).await;
    assert_eq!(command_ids(&voids), vec![format!("{id}:authorize_payment:void:1")]);
    let Some(Message::PaymentVoid(v)) = &voids[0].msg else { panic!() };
    assert_eq!(v.payment_intent_id, format!("pi-{id}-1"));
    assert_eq!(
        env.count_for("SELECT COUNT(*) FROM saga_inbox WHERE order_id = ? AND source = 'timer'", id).await,
        1,
        "fired once"
    );
    assert!(d.metrics().await.contains("saga_timers_fired_total 1"));
}

#[tokio::test]
async fn reservation_failure_backorders_short_items_and_raises_an_alert() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[]).await;
    let _sim = env.simulator(sim_args()).await;
    let id =
        d.create_order(&order_body("c", "eu", &[("OOS-1", 2, "5.00"), ("B", 1, "1.00"), ("OOS-2", 1, "2.00")])).await;
    env.wait_state(id, "PENDING_REVIEW", T).await;
    assert_eq!(env.order_status(id).await, "PENDING_REVIEW");
    env.wait_outbox_drained(T).await;
    let back = env.read_topic(Some(MessageKind::OrderItemBackordered)).await;
    let mut skus: Vec<(String, i32, i32)> = back
        .iter()
        .map(|r| match r.msg.as_ref().unwrap() {
            Message::OrderItemBackordered(b) => (b.sku.clone(), b.requested_qty, b.available_qty),
            other => panic!("{other:?}"),
        })
        .collect();
    skus.sort();
    assert_eq!(skus, vec![("OOS-1".into(), 2, 0), ("OOS-2".into(), 1, 0)], "one event per short item");
    assert_eq!(
        command_ids(&env.read_topic(Some(MessageKind::InventoryRelease)).await),
        vec![format!("{id}:reserve_inventory:release:1")],
        "partial reservation released"
    );
    let attention = env.read_topic(Some(MessageKind::OrderAttentionRequired)).await;
    assert_eq!(attention.len(), 1);
    let Some(Message::OrderAttentionRequired(a)) = &attention[0].msg else { panic!() };
    assert_eq!((a.reason_code.as_str(), a.saga_state.as_str()), ("RESERVATION_FAILED", "PENDING_REVIEW"));
    let metrics = d.metrics().await;
    assert!(metrics.contains("saga_alerts_total{code=\"RESERVATION_FAILED\"} 1"), "{metrics}");
    assert!(d.logs().contains("WARN") && d.logs().contains("inventory reservation failed"), "WARN log for the alert");
}

/// Plays the participants by hand: every answer is delivered twice.
#[tokio::test]
async fn every_event_delivered_twice_changes_nothing() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[]).await;
    let ids = [
        d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await,
        d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await,
    ];
    for id in ids {
        env.wait_state(id, "RESERVING_INVENTORY", T).await;
        let reserved = Message::from(InventoryReserved {
            event_id: format!("res-{id}"),
            order_id: id as i64,
            occurred_at: ts(),
            tenant_region: "eu".into(),
            command_id: Some(format!("{id}:reserve_inventory:reserve:1")),
        });
        env.publish(&reserved).await;
        env.publish(&reserved).await;
    }
    for id in ids {
        env.wait_state(id, "AWAITING_PAYMENT", T).await;
        let authorized = Message::from(PaymentAuthorized {
            event_id: format!("auth-{id}"),
            order_id: id as i64,
            occurred_at: ts(),
            tenant_region: "eu".into(),
            payment_intent_id: format!("pi-{id}-1"),
            amount: "1.00".into(),
            currency: "EUR".into(),
        });
        env.publish(&authorized).await;
        env.publish(&authorized).await;
    }
    for id in ids {
        env.wait_state(id, "COMPLETED", T).await;
    }
    // Both copies were consumed: wait for the inbox to count the second ones.
    eventually(T, "duplicates counted", || async { d.metrics().await.contains("saga_inbox_duplicates_total 4") }).await;
    env.wait_outbox_drained(T).await;
    for id in ids {
        assert_eq!(env.count_for("SELECT CAST(version AS SIGNED) FROM saga_instances WHERE order_id = ?", id).await, 3);
        assert_eq!(
            env.count_for("SELECT COUNT(*) FROM saga_transitions WHERE order_id = ?", id).await,
            3,
            "start + 2 transitions"
        );
        assert_eq!(env.count_for("SELECT COUNT(*) FROM order_status_history WHERE order_id = ?", id).await, 2);
    }
    for kind in [MessageKind::InventoryReserve, MessageKind::PaymentAuthorize] {
        let cmds = command_ids(&env.read_topic(Some(kind)).await);
        let unique: HashSet<_> = cmds.iter().collect();
        assert_eq!((cmds.len(), unique.len()), (2, 2), "{kind}: one command per order, no duplicates by id");
    }
    // order.created.v1, read by a test consumer: exactly one per order.
    let created = env.read_topic(Some(MessageKind::OrderCreated)).await;
    let mut orders: Vec<i64> = created.iter().map(|r| r.msg.as_ref().unwrap().order_id()).collect();
    orders.sort_unstable();
    assert_eq!(orders, ids.iter().map(|i| *i as i64).collect::<Vec<_>>());
    assert_eq!(env.read_topic(Some(MessageKind::OrderStatusChanged)).await.len(), 2);
}

#[tokio::test]
async fn late_payment_after_the_timeout_is_voided_not_applied() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[("ORDER_SAGA_TIMERS", "payment_timeout=1s")]).await;
    let _sim = env.simulator(sim_args()).await;
    let id = d.create_order(&order_body("silent-2", "eu", &[("A", 1, "3.00")])).await;
    env.wait_state(id, "CANCELLED", T).await;
    env.publish(&Message::from(PaymentAuthorized {
        event_id: format!("late-{id}"),
        order_id: id as i64,
        occurred_at: ts(),
        tenant_region: "eu".into(),
        payment_intent_id: format!("pi-{id}-1"),
        amount: "3.00".into(),
        currency: "EUR".into(),
    }))
    .await;
    eventually(T, "late payment recorded", || async {
        env.count_for("SELECT COUNT(*) FROM saga_transitions WHERE order_id = ? AND reason = 'LATE_PAYMENT'", id).await
            == 1
    })
    .await;
    assert_eq!(env.order_status(id).await, "CANCELLED", "never resurrected");
    env.wait_outbox_drained(T).await;
    let voids = command_ids(&env.read_topic(Some(MessageKind::PaymentVoid)).await);
    assert_eq!(voids, vec![format!("{id}:authorize_payment:void:1"), format!("{id}:authorize_payment:void:2")]);
    assert_eq!(
        env.count_for("SELECT COUNT(*) FROM order_status_history WHERE order_id = ?", id).await,
        2,
        "PENDING, CANCELLED"
    );
}

#[tokio::test]
async fn poison_messages_go_to_the_dlq_and_the_partition_keeps_flowing() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[]).await;
    let a = d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await;
    env.wait_state(a, "RESERVING_INVENTORY", T).await;
    // 1. Bytes that are not Confluent Avro, keyed by a known order.
    env.publish_raw(
        MessageKind::InventoryReserved,
        &a.to_string(),
        b"\x00garbage",
        &[("event_id".into(), "poison-1".into())],
    )
    .await;
    // 2. A well-formed event for an order that does not exist.
    env.publish(&Message::from(PaymentFailed {
        event_id: "poison-2".into(),
        order_id: 987_654,
        occurred_at: ts(),
        tenant_region: "eu".into(),
        payment_intent_id: "pi".into(),
        reason: "x".into(),
    }))
    .await;
    // 3. A later event of the quarantined order: parked, not applied.
    env.publish(&Message::from(InventoryReserved {
        event_id: "after-poison".into(),
        order_id: a as i64,
        occurred_at: ts(),
        tenant_region: "eu".into(),
        command_id: None,
    }))
    .await;
    // The next order still completes.
    let _sim = env.simulator(sim_args()).await;
    let b = d.create_order(&order_body("c", "eu", &[("B", 1, "1.00")])).await;
    env.wait_state(b, "COMPLETED", T).await;

    eventually(T, "two dead letters published", || async {
        env.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'dead_letter' AND published_at IS NOT NULL").await
            == 2
    })
    .await;
    let dlq = env.read_topic(None).await;
    assert_eq!(dlq.len(), 2);
    let garbage = dlq
        .iter()
        .find(|r| r.headers.get("event_id").map(String::as_str) == Some("poison-1"))
        .expect("garbage in the DLQ");
    assert_eq!(garbage.payload.as_deref(), Some(&b"\x00garbage"[..]), "original bytes");
    assert_eq!(garbage.key.as_deref(), Some(a.to_string().as_str()));
    assert_eq!(garbage.headers["dlq_error_kind"], "undecodable");
    assert_eq!(garbage.headers["dlq_source_topic"], env.topics.of(MessageKind::InventoryReserved));
    let unknown = dlq
        .iter()
        .find(|r| r.headers.get("event_id").map(String::as_str) == Some("poison-2"))
        .expect("unknown order in the DLQ");
    assert!(unknown.headers["dlq_error"].contains("unknown order 987654"), "{:?}", unknown.headers);

    // Order A: quarantined, its later event parked in arrival order.
    eventually(T, "later event parked", || async {
        env.count_for(
            "SELECT COUNT(*) FROM saga_parked_events WHERE order_id = ? AND event_id = 'after-poison' AND poison = 0",
            a,
        )
        .await
            == 1
    })
    .await;
    assert_eq!(env.count_for("SELECT COUNT(*) FROM saga_parked_events WHERE order_id = ? AND poison = 1", a).await, 1);
    assert_eq!(env.saga_state(a).await.as_deref(), Some("RESERVING_INVENTORY"));
    assert_eq!(
        env.count_for("SELECT COUNT(*) FROM saga_instances WHERE order_id = ? AND quarantined_at IS NOT NULL", a).await,
        1
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM saga_inbox WHERE outcome = 'dead_lettered'").await, 2);
    assert!(d.metrics().await.contains("saga_dead_lettered_total{reason=\"undecodable\"} 1"));
}

#[tokio::test]
async fn a_crash_between_commit_and_offset_store_double_applies_nothing() {
    let env = SagaEnv::new().await;
    // The first committed batch aborts the process before its offset is stored.
    let mut d = env.start_daemon(&[("ORDER_SAGA_FAILPOINTS", "consumer.after_commit=1")]).await;
    let id = d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await;
    env.publish(&Message::from(InventoryReserved {
        event_id: format!("res-{id}"),
        order_id: id as i64,
        occurred_at: ts(),
        tenant_region: "eu".into(),
        command_id: None,
    }))
    .await;
    let status = d.wait_exit(T).await;
    assert!(!status.success(), "the failpoint aborted the daemon");
    assert!(d.logs().contains("failpoint consumer.after_commit reached"));
    assert_eq!(env.saga_state(id).await.as_deref(), Some("AWAITING_PAYMENT"), "the batch committed before the crash");

    // Restart: the event is delivered again (its offset was never stored) and the inbox absorbs it.
    let d2 = env.start_daemon(&[]).await;
    eventually(T, "redelivered event seen as a duplicate", || async {
        d2.metrics().await.contains("saga_inbox_duplicates_total 1")
    })
    .await;
    assert_eq!(env.count_for("SELECT CAST(version AS SIGNED) FROM saga_instances WHERE order_id = ?", id).await, 2);
    assert_eq!(env.count_for("SELECT COUNT(*) FROM saga_transitions WHERE order_id = ?", id).await, 2);
    assert_eq!(env.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'payment.authorize.v1'").await, 1);
    assert_eq!(env.count_for("SELECT COUNT(*) FROM saga_timers WHERE order_id = ?", id).await, 1);
    env.wait_outbox_drained(T).await;
    assert_eq!(command_ids(&env.read_topic(Some(MessageKind::PaymentAuthorize)).await).len(), 1);
}

#[tokio::test]
async fn two_daemons_in_one_group_complete_every_saga_exactly_once() {
    let env = SagaEnv::new().await;
    let a = env.start_daemon(&[]).await;
    let b = env.start_daemon(&[]).await;
    // Wait until the group has spread the 4 topics x 3 partitions over both members.
    eventually(T, "both members own partitions", || async {
        let (ma, mb) = (assigned(&a).await, assigned(&b).await);
        ma > 0 && mb > 0 && ma + mb == 4 * PARTITIONS as u64
    })
    .await;
    let _sim = env.simulator(sim_args()).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let d = if i % 2 == 0 { &a } else { &b };
        ids.push(d.create_order(&order_body(&format!("c{i}"), "eu", &[("A", 1, "1.00")])).await);
    }
    for id in &ids {
        env.wait_state(*id, "COMPLETED", T).await;
    }
    env.wait_outbox_drained(T).await;
    assert_eq!(env.count("SELECT COUNT(*) FROM saga_transitions").await, 90, "3 per saga, none twice");
    assert_eq!(env.count("SELECT COUNT(*) FROM order_status_history").await, 60);
    assert_eq!(env.count("SELECT COUNT(*) FROM orders WHERE status = 'CONFIRMED'").await, 30);
    let authorize = command_ids(&env.read_topic(Some(MessageKind::PaymentAuthorize)).await);
    let unique: HashSet<_> = authorize.iter().collect();
    assert_eq!(unique.len(), 30);
    // Both members applied events: the group shared the work.
    for d in [&a, &b] {
        assert!(metric(&d.metrics().await, "saga_events_total{outcome=\"applied\"}") > 0, "a member applied nothing");
    }
    // Dropping SIGKILLs both: tansu 0.6.0 never reassigns a group that all members left gracefully.
    drop(a);
    drop(b);
}

/// The value of one sample in a /metrics text (0 when absent).
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

pub async fn assigned(d: &Daemon) -> u64 {
    metric(&d.metrics().await, "saga_consumer_partitions_assigned")
}

/// W3C trace context: HTTP → outbox → Kafka headers → consumer → the next command.
#[tokio::test]
async fn a_trace_id_sent_in_on_http_comes_out_in_the_kafka_headers() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[]).await;
    let _sim = env.simulator(sim_args()).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = d
        .http
        .post(format!("{}/orders", d.base))
        .header("idempotency-key", key())
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("tracestate", "congo=t61rcWkgMzE")
        .json(&order_body("c", "eu", &[("A", 1, "1.00")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert!(r.headers()["traceparent"].to_str().unwrap().contains(trace_id), "the response names the trace");
    let id = r.json::<serde_json::Value>().await.unwrap()["order_id"].as_u64().unwrap();
    env.wait_state(id, "COMPLETED", T).await;
    env.wait_outbox_drained(T).await;
    for kind in [
        MessageKind::OrderCreated,
        MessageKind::InventoryReserve,
        MessageKind::PaymentAuthorize,
        MessageKind::OrderStatusChanged,
    ] {
        let recs = env.read_topic(Some(kind)).await;
        let h = &recs[0].headers;
        let tc = order_saga::telemetry::trace_context::TraceContext::extract(
            &h["traceparent"],
            h.get("tracestate").map(String::as_str),
        )
        .unwrap();
        assert_eq!(tc.trace_id_hex(), trace_id, "{kind} left the trace");
        assert_ne!(
            tc.span_context().span_id().to_string(),
            "00f067aa0ba902b7",
            "{kind}: a span of ours, not the caller's"
        );
        // The caller's tracestate travels with the trace, through the participant's answers too.
        assert_eq!(h.get("tracestate").map(String::as_str), Some("congo=t61rcWkgMzE"), "{kind} lost the tracestate");
    }
}

#[tokio::test]
async fn logs_are_json_with_order_fields() {
    let env = SagaEnv::new().await;
    let d = env.start_daemon(&[("ORDER_SAGA_LOG_FORMAT", "json"), ("ORDER_SAGA_LOG", "info")]).await;
    let id = d.create_order(&order_body("cust-json", "eu", &[("A", 1, "1.00")])).await;
    let line =
        d.logs().lines().find(|l| l.contains("order created")).map(str::to_owned).expect("an 'order created' log line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["order_id"], id);
    assert_eq!(v["customer_id"], "cust-json");
    assert_eq!(v["status"], "PENDING");
    assert_eq!(v["level"], "INFO");
    // Every line is JSON.
    for l in d.logs().lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
}

/// The reason code recorded on the order's transition to CANCELLED.
async fn cancel_reason(env: &SagaEnv, id: u64) -> Option<String> {
    sqlx::query_scalar("SELECT reason_code FROM order_status_history WHERE order_id = ? AND to_status = 'CANCELLED'")
        .bind(id)
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}
