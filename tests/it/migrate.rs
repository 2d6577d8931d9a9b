//! Definitions that evolve, over the ops API: a candidate file previewed
//! against the sagas in flight, and sagas moved from definition version 1 to
//! the example version 2 (`sagas/examples/order-v2.toml`, which renames
//! AWAITING_PAYMENT to AWAITING_AUTHORIZATION and lengthens the payment
//! timeout): one saga and a bulk job, dry run first, audited, refused where
//! version 2 says so, and the moved sagas complete on version 2.

use std::sync::Arc;

use order_saga::contracts::*;
use order_saga::ops::{Action, BulkRequest, Ops, Request};
use order_saga::orchestrator::{InboundOutcome, LockMode, SagaStore};
use order_saga::store::inspect::SagaFilter;
use serde_json::Value;

use crate::helpers::*;

fn ts() -> TimestampMicros {
    TimestampMicros::from_datetime(chrono::Utc::now())
}

fn authorized(id: i64) -> Message {
    Message::from(PaymentAuthorized {
        event_id: format!("auth-{id}"),
        order_id: id,
        occurred_at: ts(),
        tenant_region: "eu-west".into(),
        payment_intent_id: format!("pi-{id}-1"),
        amount: "5.00".into(),
        currency: "EUR".into(),
    })
}

/// The ops surface and saga shell of a deploy that loads versions 1 and 2.
fn with_version_2(app: &TestApp) -> (Ops, SagaStore) {
    let dir = std::env::temp_dir().join(format!("sagas-migrate-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy("sagas/order.toml", dir.join("order.toml")).unwrap();
    std::fs::copy("sagas/examples/order-v2.toml", dir.join("order-v2.toml")).unwrap();
    let catalog = order_saga::saga_files::load_catalog(&dir, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(catalog.latest().version, 2);
    let store = SagaStore::new(Arc::new(catalog), app.sagas.outbox.clone());
    (Ops::new(app.db.clone(), store.clone(), None, None), store)
}

async fn row(app: &TestApp, id: i64) -> (u32, String, u32) {
    sqlx::query_as("SELECT definition_version, state, version FROM saga_instances WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn timer_due(app: &TestApp, id: i64) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT due_at FROM saga_timers WHERE order_id = ? AND timer_name = 'payment_timeout'")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

fn migrate_to_2(id: i64, version: u32, dry_run: bool) -> Request {
    Request {
        order_id: oid(id),
        action: Action::Migrate { to_version: 2 },
        expected_version: order_saga::domain::SagaVersion(version),
        actor: "ops:alice".into(),
        reason: "move to the renamed states".into(),
        dry_run,
        job_id: None,
    }
}

#[tokio::test]
async fn sagas_move_to_version_2_audited_refused_where_it_says_and_complete_there() {
    let app = TestApp::new().await;
    // Sagas started on version 1 in every non-terminal state.
    let (paying, paying_too) = (order(&app).await, order(&app).await);
    app.deliver(&[reserved(paying), reserved(paying_too)]).await;
    let reserving = order(&app).await;
    let reviewing = order(&app).await;
    app.deliver(&[out_of_stock(reviewing)]).await;
    assert_eq!(row(&app, reviewing).await.1, "PENDING_REVIEW");
    let (ops, v2) = with_version_2(&app);

    // The console offers the move where version 2 maps the state, not where it refuses it.
    let offered = |v: &Value| v["definition"]["actions_allowed_now"].as_array().unwrap().clone();
    let migrate = serde_json::json!({"action": "migrate", "to_version": 2});
    let shown = ops.show(oid(paying)).await.unwrap();
    assert!(offered(&shown).contains(&migrate), "{shown}");
    assert!(!offered(&ops.show(oid(reviewing)).await.unwrap()).contains(&migrate));

    // Dry run: says what it would do, changes nothing.
    let (_, _, version) = row(&app, paying).await;
    let due_before = timer_due(&app, paying).await;
    let dry = ops.act(&migrate_to_2(paying, version, true)).await.unwrap();
    assert_eq!(
        (dry.state_after.as_str(), dry.version_after),
        ("AWAITING_AUTHORIZATION", order_saga::domain::SagaVersion(version + 1))
    );
    assert_eq!(
        dry.consequences[0],
        "The saga moves from definition version 1 to 2: AWAITING_PAYMENT becomes AWAITING_AUTHORIZATION; its \
         outstanding commands keep their ids."
    );
    assert!(dry.consequences[1].starts_with("Timer payment_timeout moves from"), "{:?}", dry.consequences);
    assert_eq!(row(&app, paying).await, (1, "AWAITING_PAYMENT".into(), version));

    // One saga, for real: version 2, renamed state, timer 5 minutes later (20 m instead of 15 m).
    let applied = ops.act(&migrate_to_2(paying, version, false)).await.unwrap();
    assert!(applied.messages.is_empty(), "a migration sends nothing");
    assert_eq!(row(&app, paying).await, (2, "AWAITING_AUTHORIZATION".into(), version + 1));
    assert_eq!((timer_due(&app, paying).await - due_before).num_seconds(), 300);
    // Again at the old version: stale, nothing applied twice.
    let again = ops.act(&migrate_to_2(paying, version, false)).await.unwrap_err();
    assert!(again.to_string().contains("is at version"), "{again}");

    // The rest of version 1 by a bulk job: preview, then the job.
    let bulk = |dry_run| BulkRequest {
        filter: SagaFilter { definition_version: Some(1), ..Default::default() },
        selection: serde_json::json!({"definition_version": "1"}),
        action: Action::Migrate { to_version: 2 },
        actor: "ops:alice".into(),
        reason: "move the rest".into(),
        dry_run,
        limit: None,
        rate_per_second: 100,
    };
    let preview = ops.bulk(&bulk(true)).await.unwrap();
    assert_eq!(preview["would_act_on"], 3, "{preview}");
    assert_eq!(preview["would_refuse"], 1, "{preview}");
    assert!(
        preview["refusals"][0]["reason"].as_str().unwrap().contains("refuses to migrate sagas in state PENDING_REVIEW")
    );
    let selected =
        order_saga::store::inspect::select_for_bulk(&app.db, &v2.catalog, &bulk(false).filter, 100).await.unwrap();
    let spec = ops.create_job(&bulk(false), &selected).await.unwrap();
    let mut results = Vec::new();
    ops.run_job(&spec, |id, r| results.push((id, r.is_ok()))).await;
    results.sort_unstable();
    let mut expected = vec![(oid(paying_too), true), (oid(reserving), true), (oid(reviewing), false)];
    expected.sort_unstable();
    assert_eq!(results, expected);
    assert_eq!(row(&app, paying_too).await.0, 2);
    assert_eq!(row(&app, reserving).await.0, 2);
    assert_eq!(row(&app, reviewing).await.0, 1, "refused: a review started on version 1 finishes there");

    // Audited: who moved which saga, the job's too, and the refusal.
    let audit: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT CAST(order_id AS SIGNED), result, job_id FROM ops_audit WHERE action = 'migrate' AND actor = 'ops:alice' \
         ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(audit.contains(&(paying, "applied".into(), None)), "{audit:?}");
    assert!(audit.contains(&(paying, "refused".into(), None)), "the stale retry: {audit:?}");
    assert!(audit.contains(&(reserving, "applied".into(), Some(spec.job_id.clone()))), "{audit:?}");
    assert!(audit.contains(&(reviewing, "refused".into(), Some(spec.job_id.clone()))), "{audit:?}");
    let log: (String, String, String, String) = sqlx::query_as(
        "SELECT from_state, to_state, reason, actor FROM saga_transitions WHERE order_id = ? AND event_name = ?",
    )
    .bind(paying)
    .bind(order_saga::saga::migrate::MIGRATE_EVENT)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        log,
        ("AWAITING_PAYMENT".into(), "AWAITING_AUTHORIZATION".into(), "MIGRATED:v1→v2".into(), "ops:alice".into())
    );

    // They complete on version 2: the replies they were waiting for move them.
    let deliver = |msgs: Vec<Message>| {
        let v2 = v2.clone();
        let db = app.db.clone();
        async move {
            let inbound: Vec<_> = msgs.iter().map(inbound_of).collect();
            v2.apply_batch(&db, &inbound, LockMode::Wait).await.unwrap().outcomes
        }
    };
    let outcomes = deliver(vec![authorized(paying), authorized(paying_too), reserved(reserving)]).await;
    assert!(outcomes.iter().all(|o| matches!(o, InboundOutcome::Applied { .. })), "{outcomes:?}");
    assert_eq!(row(&app, reserving).await.1, "AWAITING_AUTHORIZATION");
    deliver(vec![authorized(reserving)]).await;
    for id in [paying, paying_too, reserving] {
        assert_eq!(row(&app, id).await.1, "COMPLETED", "order {id}");
        let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = ?")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        assert_eq!(status, "CONFIRMED");
    }
    // Per-version counts: version 1 keeps only the refused review.
    let overview =
        serde_json::to_value(order_saga::store::inspect::overview(&app.db, &v2.catalog).await.unwrap()).unwrap();
    let v1 = overview["versions"].as_array().unwrap().iter().find(|v| v["definition_version"] == 1).unwrap().clone();
    assert_eq!((v1["in_flight"].as_i64(), v1["migrates_to"].clone()), (Some(1), serde_json::json!([2])), "{overview}");
}

#[tokio::test]
async fn an_operator_without_the_admin_role_may_not_migrate() {
    use sha2::Digest as _;
    let bot = format!("deploy-bot:act:{}", hex::encode(sha2::Sha256::digest(b"bot-secret-0123456789")));
    let app = TestApp::with_flags(&["--ops-credential", &bot]).await;
    let id = order(&app).await;
    let r = app
        .post_json(
            &format!("/ops/sagas/{id}/actions"),
            &[("authorization", "Bearer bot-secret-0123456789")],
            &serde_json::json!({"action": "migrate", "to_version": 2, "expected_version": 1, "reason": "r"}),
        )
        .await;
    r.expect_error(403, "insufficient_scope");
}

/// `POST /ops/definitions/preview` with `text`.
async fn preview(app: &TestApp, text: &str) -> Resp {
    let body = serde_json::json!({"definition": text, "sample": 10});
    app.post_json("/ops/definitions/preview", &[("authorization", "Bearer test-ops-token-0123456789")], &body).await
}

#[tokio::test]
async fn an_uploaded_definition_is_previewed_against_every_saga_in_flight() {
    let app = TestApp::new().await;
    // One saga in each non-terminal state, and one finished.
    let paying = order(&app).await;
    app.deliver(&[reserved(paying)]).await;
    order(&app).await; // still reserving
    let reviewing = order(&app).await;
    app.deliver(&[out_of_stock(reviewing)]).await;
    let done = order(&app).await;
    app.deliver(&[reserved(done), authorized(done)]).await;
    assert_eq!(row(&app, done).await.1, "COMPLETED");
    let v1 = std::fs::read_to_string("sagas/order.toml").unwrap();

    let same = preview(&app, &v1).await;
    assert_eq!((same.json["in_flight"].as_u64(), same.json["divergent"].as_u64()), (Some(3), Some(0)), "{}", same.json);

    // AWAITING_PAYMENT answers payment.authorized.v1 with another reason: exactly that saga.
    let changed = v1.replacen("reason = \"PAYMENT_AUTHORIZED\"", "reason = \"PAYMENT_ACCEPTED\"", 1);
    let r = preview(&app, &changed).await;
    r.expect(200);
    assert_eq!(r.json["divergent"], 1, "{}", r.json);
    assert_eq!(r.json["states"]["AWAITING_PAYMENT"], serde_json::json!({"in_flight": 1, "divergent": 1}));
    assert_eq!(r.json["states"]["RESERVING_INVENTORY"]["divergent"], 0);
    assert_eq!(r.json["states"]["PENDING_REVIEW"]["divergent"], 0);
    let sample = &r.json["sample"];
    assert_eq!((sample[0]["order_id"].as_i64(), sample.as_array().unwrap().len()), (Some(paying), 1));
    assert!(sample[0]["how"]["how"][0].as_str().unwrap().starts_with("payment.authorized.v1:"), "{sample}");
    assert!(sample[0]["timeline"][1].as_str().unwrap().contains("--inventory.reserved.v1--> AWAITING_PAYMENT"));

    // An invalid file: each problem with its line.
    let broken = preview(&app, &v1.replacen("after = \"15m\"", "after = \"soon\"", 1)).await;
    broken.expect_error(422, "invalid_definition");
    assert!(
        broken.json["error"]["details"]["errors"][0]["message"].as_str().unwrap().contains("timer payment_timeout")
    );
    assert!(broken.json["error"]["details"]["errors"][0]["line"].as_u64().unwrap() > 1);
    // A migration that does not fit the version loaded here is invalid too.
    let v2 = std::fs::read_to_string("sagas/examples/order-v2.toml").unwrap();
    let r = preview(&app, &v2.replacen("refuse = { PENDING_REVIEW", "# refuse = { PENDING_REVIEW", 1)).await;
    r.expect_error(422, "invalid_definition");
    assert!(
        r.json["error"]["details"]["errors"][0]["message"].as_str().unwrap().contains("PENDING_REVIEW"),
        "{}",
        r.json
    );
    // The example version 2 itself: sagas it would move are judged as moved (the renamed state is no
    // difference), so only the longer payment window shows, for the saga waiting for its payment.
    let r = preview(&app, &v2).await;
    assert_eq!(r.json["divergent"], 1, "{}", r.json);
    assert_eq!(r.json["sample"][0]["order_id"], paying);
    assert_eq!(r.json["sample"][0]["how"]["how"][0], "timer payment_timeout lasts 15m ⇒ 20m");
    // Without its migration section, by names: the renamed state and the way into it differ.
    let start = v2.find("[migrate.from.1]").unwrap();
    let end = start + v2[start..].find("\n\n").unwrap();
    let r = preview(&app, &format!("{}{}", &v2[..start], &v2[end..])).await;
    assert_eq!(r.json["divergent"], 2, "{}", r.json);
    assert_eq!(r.json["states"]["PENDING_REVIEW"]["divergent"], 0);
    preview(&app, &"x".repeat(2 << 20)).await.expect_error(413, "payload_too_large");
}
