//! A transaction's writes go to the server as one multi-statement query with
//! their values as literals (`store::script`): every value must come back as
//! it was sent, whatever it holds, and a statement's failure must be reported
//! and classified as that statement's.

use std::time::Duration;

use order_saga::orchestrator::{Inbound, InboundOutcome, LockMode};

use crate::helpers::*;

/// Quotes, backslashes, comment and statement terminators, non-ASCII (the API
/// refuses control characters; a NUL goes in through an event's error).
const HOSTILE: &str = "x'); DELETE FROM orders; -- \\' \\\\ \" ` /* ü 🦀";
/// A SKU may hold visible ASCII only, without spaces.
const HOSTILE_SKU: &str = "x');DELETE/**/FROM/**/orders;--\\'\\\\\"`";
/// The same for columns that hold ASCII only (event ids).
const HOSTILE_ASCII: &str = "x'); DELETE FROM saga_inbox; -- \\' \\\\ \" ` /*";

#[tokio::test]
async fn hostile_values_are_stored_as_sent_and_run_nothing() {
    let app = TestApp::new().await;
    let body = order_body(HOSTILE, "eu-west", &[(HOSTILE_SKU, 2, "1.25")]);
    let r = app.create_order(&key(), &body).await;
    r.expect(201);
    let id = r.json["order_id"].as_i64().unwrap();
    let (customer, sku): (String, String) = sqlx::query_as(
        "SELECT o.customer_id, i.sku FROM orders o JOIN order_items i ON i.order_id = o.order_id WHERE o.order_id = ?",
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((customer.as_str(), sku.as_str()), (HOSTILE, HOSTILE_SKU));

    // An undecodable event with a hostile id and reason: inbox, parked event,
    // transition and dead-letter rows all carry them.
    let reason = format!("bad bytes: \0 {HOSTILE}");
    let poison = Inbound {
        event_id: HOSTILE_ASCII.into(),
        order_id: Some(oid(id)),
        event_name: "inventory.reserved.v1".into(),
        event: Err(reason.clone()),
        source: order_saga::orchestrator::Source::Kafka { topic: "test".into(), partition: 0, offset: 0 },
        trace: None,
        raw: None,
    };
    let out = app.sagas.apply_batch(&app.db, &[poison], LockMode::Wait).await.unwrap().outcomes;
    assert!(matches!(out[..], [InboundOutcome::DeadLettered { .. }]), "{out:?}");
    let inbox: String = sqlx::query_scalar("SELECT event_id FROM saga_inbox WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(inbox, HOSTILE_ASCII);
    let (parked_id, error): (String, String) =
        sqlx::query_as("SELECT event_id, error FROM saga_parked_events WHERE order_id = ?")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(parked_id, HOSTILE_ASCII);
    assert!(error.contains(HOSTILE), "{error:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1, "no statement ran from a value");
}

/// An event whose inbox row another transaction inserts after the batch
/// looked: the duplicate key is the inbox statement's, which means a lost
/// race (retried, then the event is a duplicate), not a failed batch.
#[tokio::test]
async fn a_duplicate_key_in_the_inbox_statement_is_a_lost_race_and_the_retry_sees_a_duplicate() {
    let app = TestApp::new().await;
    let id = order(&app).await;
    let msg = reserved(id);
    let mut other = app.db.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO saga_inbox (event_id, order_id, event_name, source, outcome, received_at) \
         VALUES (?, ?, 'inventory.reserved.v1', 'test', 'applied', NOW(6))",
    )
    .bind(msg.event_id())
    .bind(id)
    .execute(&mut *other)
    .await
    .unwrap();
    let batch = {
        let (sagas, db) = (app.sagas.clone(), app.db.clone());
        let inbound = inbound_of(&msg);
        tokio::spawn(async move { sagas.apply_batch(&db, &[inbound], LockMode::Wait).await })
    };
    // The batch read the inbox (it did not see the uncommitted row) and now
    // waits on that row's key in its inbox statement (a connection sees its
    // own user's threads without the PROCESS privilege).
    eventually(Duration::from_secs(30), "the batch waiting on the inbox row's lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE COMMAND = 'Query' AND INFO LIKE 'INSERT INTO saga\\_inbox %'",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        waiting > 0
    })
    .await;
    other.commit().await.unwrap();
    let result = batch.await.unwrap().expect("a lost race is retried, not an error");
    assert!(matches!(result.outcomes[..], [InboundOutcome::Duplicate]), "{:?}", result.outcomes);
    let state: String = sqlx::query_scalar("SELECT state FROM saga_instances WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(state, "RESERVING_INVENTORY", "the rolled-back batch moved nothing");
}
