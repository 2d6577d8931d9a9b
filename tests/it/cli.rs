//! The command line: saga checks and graphs, startup validation, migrate,
//! timeouts sweep and ops, run as the real binary.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::helpers::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_order-saga"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run order-saga")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sagas_check_and_graph() {
    let ok = run(&["sagas", "check"], &[]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("saga \"order\" version 1 ok"));
    let graph = run(&["sagas", "graph"], &[]);
    assert!(graph.status.success());
    assert!(text(&graph.stdout).starts_with("stateDiagram-v2"));

    let dir = std::env::temp_dir().join(format!("sagas-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = std::fs::read_to_string("sagas/order.toml").unwrap().replace("to = \"COMPLETED\"", "to = \"DONE\"");
    std::fs::write(dir.join("order.toml"), &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("to = \"DONE\"")).unwrap() + 1;
    let bad = run(&["sagas", "check", "--sagas-dir", dir.to_str().unwrap()], &[]);
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains(&format!(
            "order.toml:{line}: state AWAITING_PAYMENT, on payment.authorized.v1: unknown state \"DONE\""
        )),
        "{err}"
    );

    // The daemon refuses to start on it, naming file and line.
    let serve = run(
        &["serve", "--sagas-dir", dir.to_str().unwrap()],
        &[
            ("ORDER_SAGA_DATABASE_URL", "mysql://u:p@127.0.0.1:1/x"),
            ("ORDER_SAGA_KAFKA_BROKERS", "127.0.0.1:1"),
            ("ORDER_SAGA_SCHEMA_REGISTRY_URL", "http://127.0.0.1:1"),
        ],
    );
    assert!(!serve.status.success());
    assert!(text(&serve.stderr).contains(&format!("order.toml:{line}")), "{}", text(&serve.stderr));
}

#[test]
fn invalid_configuration_is_refused_with_the_variable_named() {
    let out = run(&["serve"], &[("ORDER_SAGA_DATABASE_URL", "postgres://x/y")]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("ORDER_SAGA_DATABASE_URL must start with mysql://"), "{}", text(&out.stderr));
    let out = run(&["serve", "--shutdown-grace", "soon"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--shutdown-grace"));
    // A timer override beyond what a timer may last is refused at startup,
    // not an overflow (a panic) when the first saga arms it.
    let out = run(
        &["serve"],
        &[
            ("ORDER_SAGA_DATABASE_URL", "mysql://u:p@127.0.0.1:1/x"),
            ("ORDER_SAGA_KAFKA_BROKERS", "127.0.0.1:1"),
            ("ORDER_SAGA_SCHEMA_REGISTRY_URL", "http://127.0.0.1:1"),
            ("ORDER_SAGA_TIMERS", "payment_timeout=1000y"),
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("payment_timeout=1000y"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("longer than the 366 days a timer may last"), "{}", text(&out.stderr));
    let help = run(&["--help"], &[]);
    assert!(text(&help.stdout).contains("ORDER_SAGA_DATABASE_URL"));
}

#[tokio::test]
async fn migrate_sweep_and_ops_from_the_command_line() {
    let app = TestApp::new().await;
    let url = format!("{}/{}", env().db_base, db_name(&app).await);
    let env = [("ORDER_SAGA_DATABASE_URL", url.as_str())];
    let out = run(&["migrate"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A saga waiting for payment whose timer is due.
    let id = order_awaiting_payment(&app).await;
    sqlx::query("UPDATE saga_timers SET due_at = NOW(6) - INTERVAL 1 SECOND").execute(&app.db.pool).await.unwrap();

    let list = run(&["ops", "list", "--state", "AWAITING_PAYMENT"], &env);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["sagas"][0]["order_id"], id);

    let stale = run(
        &["ops", "cancel", &id.to_string(), "--expected-version", "1", "--actor", "ops:cli", "--reason", "test"],
        &env,
    );
    assert_eq!(stale.status.code(), Some(3), "refusals exit 3");
    assert!(text(&stale.stderr).contains("version 2, not 1"));

    let sweep = run(&["timeouts", "sweep"], &env);
    assert!(sweep.status.success(), "{}", text(&sweep.stderr));
    let v: Value = serde_json::from_slice(&sweep.stdout).unwrap();
    assert_eq!(v["fired"], 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders WHERE status = 'CANCELLED'").await, 1);
    let again = run(&["timeouts", "sweep"], &env);
    assert_eq!(serde_json::from_slice::<Value>(&again.stdout).unwrap()["fired"], 0, "a timer fires once");

    let show = run(&["ops", "show", &id.to_string()], &env);
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["saga"]["state"], "CANCELLED");
}

async fn db_name(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT DATABASE()").fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn the_http_sweep_fires_due_timers_for_external_schedulers() {
    let app = TestApp::new().await;
    order_awaiting_payment(&app).await;
    let auth = ("authorization", "Bearer test-ops-token-0123456789");
    let none = app.post_json("/ops/timeouts/sweep", &[auth], &serde_json::json!({})).await;
    none.expect(200);
    assert_eq!(none.json["fired"], 0, "not due yet");
    sqlx::query("UPDATE saga_timers SET due_at = NOW(6) - INTERVAL 1 SECOND").execute(&app.db.pool).await.unwrap();
    let fired = app.post_json("/ops/timeouts/sweep", &[auth], &serde_json::json!({})).await;
    assert_eq!(fired.json["fired"], 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders WHERE status = 'CANCELLED'").await, 1);
}

#[tokio::test]
async fn housekeeping_purges_only_what_is_old() {
    let app = TestApp::new().await;
    for _ in 0..3 {
        app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await.expect(201);
    }
    sqlx::query("UPDATE outbox SET published_at = NOW(6) - INTERVAL 2 HOUR WHERE event_type = 'order.created.v1'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE idempotency_keys SET created_at = NOW(6) - INTERVAL 2 DAY LIMIT 1")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(order_saga::store::outbox::purge_published(&app.db.pool, hour_ago).await.unwrap(), 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 3, "unpublished rows stay");
    let day_ago = chrono::Utc::now() - chrono::Duration::days(1);
    assert_eq!(order_saga::store::orders::purge_idempotency_keys(&app.db, day_ago).await.unwrap(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys").await, 2);
}

/// Creates an order and delivers its `InventoryReserved`, leaving the saga in
/// AWAITING_PAYMENT with the payment timer armed.
async fn order_awaiting_payment(app: &TestApp) -> i64 {
    let r = app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await;
    let id = r.json["order_id"].as_i64().unwrap();
    app.deliver(&[order_saga::contracts::Message::from(order_saga::contracts::InventoryReserved {
        event_id: "r".into(),
        order_id: id,
        occurred_at: order_saga::contracts::TimestampMicros(0),
        tenant_region: "eu".into(),
        command_id: None,
    })])
    .await;
    id
}

#[test]
fn sagas_diff_says_what_changed_and_exits_0_1_or_2() {
    let dir = std::env::temp_dir().join(format!("sagas-diff-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read_to_string("sagas/order.toml").unwrap();
    let same = run(&["sagas", "diff", "sagas/order.toml", "sagas/order.toml"], &[]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    assert!(text(&same.stdout).contains("0 change(s)"));
    // AWAITING_PAYMENT answers payment.failed.v1 with another reason.
    let changed = original.replacen("reason = \"PAYMENT_FAILED\"", "reason = \"PAYMENT_REFUSED\"", 1);
    assert_ne!(changed, original, "the fixture changes something");
    std::fs::write(dir.join("new.toml"), &changed).unwrap();
    let new = dir.join("new.toml");
    let diff = run(&["sagas", "diff", "sagas/order.toml", new.to_str().unwrap()], &[]);
    assert_eq!(diff.status.code(), Some(1));
    let out = text(&diff.stdout);
    assert!(out.contains("1 change(s)"), "{out}");
    assert!(out.contains("~ transition AWAITING_PAYMENT on payment.failed.v1:"), "{out}");
    assert!(out.contains("PAYMENT_REFUSED") && out.contains("stateDiagram-v2"), "{out}");
    let json = run(&["sagas", "diff", "sagas/order.toml", new.to_str().unwrap(), "--format", "json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["changes"][0]["kind"], "changed");
    std::fs::write(dir.join("broken.toml"), "not a saga").unwrap();
    let broken = dir.join("broken.toml");
    assert_eq!(run(&["sagas", "diff", "sagas/order.toml", broken.to_str().unwrap()], &[]).status.code(), Some(2));
}

#[test]
fn sagas_test_runs_the_shipped_scenarios_and_they_cover_every_transition() {
    let r = run(&["sagas", "test"], &[]);
    let out = text(&r.stdout);
    assert_eq!(r.status.code(), Some(0), "{out}{}", text(&r.stderr));
    assert!(out.contains("10 passed, 0 failed"), "{out}");
    assert!(out.contains("every transition of version 1 is covered"), "{out}");
    // A scenario that expects the wrong thing fails the run, naming the step.
    let dir = std::env::temp_dir().join(format!("scenarios-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong = std::fs::read_to_string("sagas/tests/payment_declined.toml")
        .unwrap()
        .replace("CARD_DECLINED", "X")
        .replace("sends = [\"inventory.release.v1\"]", "sends = [\"payment.void.v1\"]");
    std::fs::write(dir.join("wrong.toml"), wrong).unwrap();
    let r = run(&["sagas", "test", "--dir", dir.to_str().unwrap()], &[]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        text(&r.stdout).contains(
            "step 3 (reply payment.failed.v1): sent [\"inventory.release.v1\"], expected [\"payment.void.v1\"]"
        )
    );
}

#[tokio::test]
async fn sagas_preview_names_exactly_the_sagas_a_change_would_treat_differently() {
    let app = TestApp::new().await;
    let url = format!("{}/{}", env().db_base, db_name(&app).await);
    let env = [("ORDER_SAGA_DATABASE_URL", url.as_str())];
    let paying = order_awaiting_payment(&app).await;
    let reserving = app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await;
    let reserving = reserving.json["order_id"].as_i64().unwrap();
    // And one waiting for an operator: every non-terminal state has a saga.
    let reviewing = app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await;
    let reviewing = reviewing.json["order_id"].as_i64().unwrap();
    app.deliver(&[order_saga::contracts::Message::from(order_saga::contracts::InventoryReservationFailed {
        event_id: "f".into(),
        order_id: reviewing,
        occurred_at: order_saga::contracts::TimestampMicros(0),
        tenant_region: "eu".into(),
        command_id: None,
        reason: "OUT_OF_STOCK".into(),
        shortages: vec![],
    })])
    .await;
    let dir = std::env::temp_dir().join(format!("sagas-preview-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read_to_string("sagas/order.toml").unwrap();

    std::fs::write(dir.join("same.toml"), &original).unwrap();
    let same = run(&["sagas", "preview", dir.join("same.toml").to_str().unwrap()], &env);
    assert_eq!(same.status.code(), Some(0), "{}{}", text(&same.stdout), text(&same.stderr));
    assert!(text(&same.stdout).starts_with("3 in flight, 0 would behave differently"), "{}", text(&same.stdout));

    // AWAITING_PAYMENT answers payment.authorized.v1 with another reason.
    let changed = original.replacen("reason = \"PAYMENT_AUTHORIZED\"", "reason = \"PAYMENT_ACCEPTED\"", 1);
    std::fs::write(dir.join("changed.toml"), &changed).unwrap();
    let out = run(&["sagas", "preview", dir.join("changed.toml").to_str().unwrap(), "--format", "json"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["in_flight"].as_u64(), v["divergent"].as_u64()), (Some(3), Some(1)), "{v}");
    assert_eq!(v["states"]["AWAITING_PAYMENT"], json!({"in_flight": 1, "divergent": 1}));
    assert_eq!(v["states"]["RESERVING_INVENTORY"], json!({"in_flight": 1, "divergent": 0}));
    assert_eq!(v["states"]["PENDING_REVIEW"], json!({"in_flight": 1, "divergent": 0}));
    assert_eq!(v["sample"][0]["order_id"], paying);
    assert_eq!(v["sample"][0]["how"]["verdict"], "next_differs");
    assert!(v["sample"][0]["how"]["how"][0].as_str().unwrap().starts_with("payment.authorized.v1:"), "{v}");
    assert!(v["sample"][0]["how"]["how"][0].as_str().unwrap().contains("PAYMENT_ACCEPTED"), "{v}");
    assert_ne!(v["sample"][0]["order_id"], reserving);

    std::fs::write(dir.join("broken.toml"), "nope").unwrap();
    assert_eq!(run(&["sagas", "preview", dir.join("broken.toml").to_str().unwrap()], &env).status.code(), Some(2));
}

#[tokio::test]
async fn a_definition_version_still_in_use_cannot_be_retired() {
    let app = TestApp::new().await;
    let url = format!("{}/{}", env().db_base, db_name(&app).await);
    let id = order_awaiting_payment(&app).await;
    // The sagas directory now holds only version 2: version 1 was removed.
    let dir = std::env::temp_dir().join(format!("sagas-retire-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let v2 = std::fs::read_to_string("sagas/order.toml").unwrap().replacen("version = 1", "version = 2", 1);
    std::fs::write(dir.join("order.v2.toml"), v2).unwrap();
    let serve = run(
        &["serve", "--sagas-dir", dir.to_str().unwrap()],
        &[
            ("ORDER_SAGA_DATABASE_URL", url.as_str()),
            ("ORDER_SAGA_KAFKA_BROKERS", "127.0.0.1:1"),
            ("ORDER_SAGA_SCHEMA_REGISTRY_URL", "http://127.0.0.1:1"),
        ],
    );
    assert!(!serve.status.success());
    let err = text(&serve.stderr);
    assert!(err.contains(&format!("version 1: 1 saga(s) in flight, e.g. orders {id}")), "{err}");
}
