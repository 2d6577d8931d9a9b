//! Operator surfaces: inspection, audited actions with their refusals, bulk,
//! and the metrics endpoint.

use std::time::Duration;

use axum::http::Method;
use order_saga::orchestrator::Inbound;
use serde_json::{Value, json};

use crate::helpers::*;
use order_saga::domain::SagaVersion;

const AUTH: (&str, &str) = ("authorization", "Bearer test-ops-token-0123456789");

async fn to_awaiting_payment(app: &TestApp) -> i64 {
    let id = order(app).await;
    app.deliver(&[reserved(id)]).await;
    id
}

async fn get_ops(app: &TestApp, path: &str) -> Resp {
    app.call(Method::GET, path, &[AUTH], None).await
}

async fn act(app: &TestApp, id: i64, body: Value) -> Resp {
    app.post_json(&format!("/ops/sagas/{id}/actions"), &[AUTH], &body).await
}

async fn saga(app: &TestApp, id: i64) -> Value {
    let r = get_ops(app, &format!("/ops/sagas/{id}")).await;
    r.expect(200);
    r.json
}

async fn age(app: &TestApp, id: i64, minutes: i64) {
    sqlx::query("UPDATE saga_instances SET state_entered_at = NOW(6) - INTERVAL ? MINUTE WHERE order_id = ?")
        .bind(minutes)
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn ops_endpoints_need_the_token_and_vanish_without_one() {
    let app = TestApp::new().await;
    app.get("/ops/sagas").await.expect_error(401, "unauthorized");
    app.call(Method::GET, "/ops/sagas", &[("authorization", "Bearer wrong-token-0123456789")], None)
        .await
        .expect_error(401, "unauthorized");
    app.post_json("/ops/timeouts/sweep", &[], &json!({})).await.expect_error(401, "unauthorized");
    let mut disabled = TestApp::new().await;
    disabled.state.ops = None;
    disabled.router = order_saga::http::router(disabled.state.clone());
    disabled.call(Method::GET, "/ops/sagas", &[AUTH], None).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn the_stuck_list_picks_exactly_the_sagas_that_overstay() {
    let app = TestApp::new().await;
    // RESERVING_INVENTORY expects at most 2m, AWAITING_PAYMENT 16m.
    let a = order(&app).await;
    let b = order(&app).await;
    let fresh = order(&app).await;
    let paying = to_awaiting_payment(&app).await;
    age(&app, a, 10).await;
    age(&app, b, 3).await;
    age(&app, paying, 5).await;

    let stuck = get_ops(&app, "/ops/sagas?stuck=true").await;
    stuck.expect(200);
    let ids: Vec<i64> =
        stuck.json["sagas"].as_array().unwrap().iter().map(|s| s["order_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![a, b], "oldest first, only the overstaying ones");
    assert!(stuck.json["sagas"][0]["stuck"].as_bool().unwrap());
    assert_eq!(stuck.json["sagas"][0]["max_dwell_seconds"], 120);

    let older = get_ops(&app, "/ops/sagas?older_than=4m").await;
    let ids: Vec<i64> =
        older.json["sagas"].as_array().unwrap().iter().map(|s| s["order_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![a, paying]);
    let by_state = get_ops(&app, "/ops/sagas?state=AWAITING_PAYMENT").await;
    assert_eq!(by_state.json["sagas"].as_array().unwrap().len(), 1);
    assert_eq!(by_state.json["sagas"][0]["stuck"], false);

    // Pagination: one at a time, no gaps, no repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/ops/sagas?limit=1&cursor={c}"),
            None => "/ops/sagas?limit=1".to_owned(),
        };
        let r = get_ops(&app, &path).await;
        seen.extend(r.json["sagas"].as_array().unwrap().iter().map(|s| s["order_id"].as_i64().unwrap()));
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec![a, paying, b, fresh]);
    get_ops(&app, "/ops/sagas?older_than=soon").await.expect_error(422, "invalid_parameter");
    get_ops(&app, "/ops/sagas?colour=red").await.expect_error(422, "unknown_parameter");

    let m = app.state.metrics.clone();
    order_saga::ops::refresh_gauges(&app.db, &app.sagas, &m).await.unwrap();
    let text = app.get("/metrics").await;
    let body = String::from_utf8(text.raw).unwrap();
    assert!(body.contains("saga_stuck{state=\"RESERVING_INVENTORY\"} 2"), "{body}");
    assert!(body.contains("saga_stuck{state=\"AWAITING_PAYMENT\"} 0"));
    assert!(body.contains("saga_instances{state=\"RESERVING_INVENTORY\"} 3"));
}

#[tokio::test]
async fn show_tells_the_whole_story() {
    let app = TestApp::new().await;
    let id = to_awaiting_payment(&app).await;
    let s = saga(&app, id).await;
    assert_eq!(s["saga"]["state"], "AWAITING_PAYMENT");
    assert_eq!(s["saga"]["version"], 2);
    let transitions: Vec<&str> =
        s["transitions"].as_array().unwrap().iter().map(|t| t["event"].as_str().unwrap()).collect();
    assert_eq!(transitions, vec!["order.created.v1", "inventory.reserved.v1"]);
    assert_eq!(s["timers"][0]["name"], "payment_timeout");
    let pending: Vec<&str> =
        s["outbox_unpublished"].as_array().unwrap().iter().map(|o| o["event_type"].as_str().unwrap()).collect();
    assert_eq!(pending, vec!["order.created.v1", "inventory.reserve.v1", "payment.authorize.v1"]);
    assert_eq!(s["inbox"][0]["outcome"], "applied");
    assert_eq!(s["definition"]["current_step"], "authorize_payment");
    assert_eq!(s["definition"]["manual_events_allowed_now"], json!(["cancel.requested"]));
    assert_eq!(s["order"]["status"], "PENDING");
    get_ops(&app, "/ops/sagas/999999").await.expect_error(404, "saga_not_found");
}

#[tokio::test]
async fn retry_step_resends_the_same_command_and_is_audited() {
    let app = TestApp::new().await;
    let id = to_awaiting_payment(&app).await;
    let body = |v: u32, dry: bool| json!({"action": "retry_step", "expected_version": v, "actor": "ops:alice", "reason": "PSP lost it", "dry_run": dry});
    let stale = act(&app, id, body(1, false)).await;
    stale.expect_error(409, "stale_version");
    // What moved it on since version 1, and who.
    let changes = stale.json["error"]["details"]["changes"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0]["saga_version"].as_u64(), changes[0]["event"].as_str()),
        (Some(2), Some("inventory.reserved.v1"))
    );
    assert!(changes[0]["actor"].as_str().is_some_and(|a| !a.is_empty()));
    let dry = act(&app, id, body(2, true)).await;
    dry.expect(200);
    assert_eq!(dry.json["dry_run"], true);
    assert_eq!(dry.json["messages"][0]["command_id"], format!("{id}:authorize_payment:authorize:1"));
    // Said in words: the same command id again, which a participant that saw it discards.
    assert!(dry.json["consequences"].to_string().contains("payment.authorize.v1 again under the same command id"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'payment.authorize.v1'").await,
        1,
        "dry run writes nothing"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM ops_audit WHERE result = 'applied'").await, 0);

    let done = act(&app, id, body(2, false)).await;
    done.expect(200);
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'payment.authorize.v1' ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let cmds: Vec<Value> = rows.iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[0]["command_id"], cmds[1]["command_id"], "same command id");
    assert_ne!(cmds[0]["event_id"], cmds[1]["event_id"], "a new message");
    assert_eq!(done.json["version_after"], 2, "a retry is not a transition");
    let audit = get_ops(&app, &format!("/ops/audit?order_id={id}")).await;
    let entries = audit.json["audit"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "the refusal and the retry: {entries:?}");
    assert_eq!(
        (entries[0]["result"].as_str(), entries[0]["actor"].as_str(), entries[0]["reason"].as_str()),
        (Some("applied"), Some("ops:alice"), Some("PSP lost it"))
    );
    assert_eq!(entries[1]["result"], "refused");
    // Without actor or reason: refused before anything.
    act(&app, id, json!({"action": "retry_step", "expected_version": 2, "actor": "", "reason": "x"}))
        .await
        .expect_error(422, "invalid_request");
    act(&app, id, json!({"action": "teleport", "expected_version": 2, "actor": "a", "reason": "x"}))
        .await
        .expect_error(422, "invalid_action");
}

#[tokio::test]
async fn forcing_a_transition_the_definition_does_not_allow_is_refused() {
    let app = TestApp::new().await;
    let id = order(&app).await;
    let r = act(&app, id, json!({"action": "force", "event": "reservation.retry.requested", "expected_version": 1, "actor": "ops:bob", "reason": "try"})).await;
    r.expect_error(409, "not_allowed");
    assert!(r.json["error"]["message"].as_str().unwrap().contains("transition not in the definition"));
    act(&app, id, json!({"action": "force", "event": "payment.authorized.v1", "expected_version": 1, "actor": "ops:bob", "reason": "try"}))
        .await
        .expect_error(409, "not_allowed");
    assert_eq!(app.count("SELECT COUNT(*) FROM ops_audit WHERE result = 'refused'").await, 2);
    // After an out-of-stock, the same event is allowed and re-runs the reservation.
    app.deliver(&[out_of_stock(id)]).await;
    let r = act(&app, id, json!({"action": "force", "event": "reservation.retry.requested", "expected_version": 2, "actor": "ops:bob", "reason": "stock arrived"})).await;
    r.expect(200);
    assert_eq!(
        (r.json["state_before"].as_str(), r.json["state_after"].as_str()),
        (Some("PENDING_REVIEW"), Some("RESERVING_INVENTORY"))
    );
    assert_eq!(r.json["order_status_after"], "PENDING");
    assert_eq!(r.json["messages"][1]["command_id"], format!("{id}:reserve_inventory:reserve:2"));
}

#[tokio::test]
async fn cancel_compensates_like_a_normal_transition() {
    let app = TestApp::new().await;
    let id = to_awaiting_payment(&app).await;
    let r = act(&app, id, json!({"action": "cancel", "expected_version": 2, "actor": "ops:carol", "reason": "fraud"}))
        .await;
    r.expect(200);
    assert_eq!(r.json["state_after"], "CANCELLED");
    assert_eq!(r.json["order_status_after"], "CANCELLED");
    let types: Vec<&str> = r.json["messages"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["order.status.changed.v1", "payment.void.v1", "inventory.release.v1"]);
    assert!(r.json["timers_after"].as_array().unwrap().is_empty(), "timer disarmed");
    let actor: String = sqlx::query_scalar("SELECT actor FROM order_status_history WHERE to_status = 'CANCELLED'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(actor, "ops:carol");
    act(&app, id, json!({"action": "cancel", "expected_version": 3, "actor": "ops:carol", "reason": "again"}))
        .await
        .expect_error(409, "not_allowed");
}

#[tokio::test]
async fn timers_can_be_fired_moved_and_cancelled() {
    let app = TestApp::new().await;
    let id = to_awaiting_payment(&app).await;
    let moved = act(&app, id, json!({"action": "reschedule_timer", "timer": "payment_timeout", "after": "2h", "expected_version": 2, "actor": "ops:d", "reason": "customer asked for time"})).await;
    moved.expect(200);
    let due: chrono::DateTime<chrono::Utc> = moved.json["timers_after"][0]["due_at"].as_str().unwrap().parse().unwrap();
    assert!(due > chrono::Utc::now() + chrono::Duration::minutes(110));
    act(&app, id, json!({"action": "reschedule_timer", "timer": "payment_timeout", "expected_version": 2, "actor": "ops:d", "reason": "x"})).await.expect_error(422, "invalid_request");

    let fired = act(&app, id, json!({"action": "fire_timer", "timer": "payment_timeout", "expected_version": 2, "actor": "ops:d", "reason": "give up"})).await;
    fired.expect(200);
    assert_eq!(fired.json["state_after"], "CANCELLED");
    let reason: Option<String> =
        sqlx::query_scalar("SELECT reason_code FROM order_status_history WHERE to_status = 'CANCELLED'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("PAYMENT_TIMEOUT"));
    act(&app, id, json!({"action": "fire_timer", "timer": "payment_timeout", "expected_version": 3, "actor": "ops:d", "reason": "twice"})).await.expect_error(409, "not_allowed");

    let other = to_awaiting_payment(&app).await;
    let c = act(&app, other, json!({"action": "cancel_timer", "timer": "payment_timeout", "expected_version": 2, "actor": "ops:d", "reason": "manual follow-up"})).await;
    c.expect(200);
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_timers").await, 0);
}

#[tokio::test]
async fn a_quarantined_saga_is_released_or_its_poison_skipped() {
    let app = TestApp::new().await;
    let id = order(&app).await;
    // An undecodable message for this order, then a good one behind it.
    poison(&app, id, "poison-x").await;
    app.deliver(&[reserved(id)]).await;
    let s = saga(&app, id).await;
    assert!(s["saga"]["quarantined"].as_str().unwrap().contains("bad bytes"));
    assert_eq!(s["parked"].as_array().unwrap().len(), 2);
    assert_eq!(s["parked"][0]["replayable"], false);
    // Other actions wait for the quarantine to be dealt with.
    act(&app, id, json!({"action": "cancel", "expected_version": 1, "actor": "ops:e", "reason": "x"}))
        .await
        .expect_error(409, "not_allowed");
    // The undecodable event cannot be replayed: release refuses and says what to do.
    let r =
        act(&app, id, json!({"action": "release", "expected_version": 1, "actor": "ops:e", "reason": "fixed"})).await;
    r.expect_error(409, "not_allowed");
    assert!(r.json["error"]["message"].as_str().unwrap().contains("skip_poison"));
    let dry = act(
        &app,
        id,
        json!({"action": "skip_poison", "expected_version": 1, "actor": "ops:e", "reason": "junk", "dry_run": true}),
    )
    .await;
    dry.expect(200);
    assert_eq!(dry.json["state_after"], "AWAITING_PAYMENT");
    assert_eq!(saga(&app, id).await["saga"]["state"], "RESERVING_INVENTORY", "dry run changed nothing");
    let r = act(&app, id, json!({"action": "skip_poison", "expected_version": 1, "actor": "ops:e", "reason": "junk"}))
        .await;
    r.expect(200);
    assert_eq!(r.json["state_after"], "AWAITING_PAYMENT", "the parked event was replayed");
    assert!(r.json["quarantined_after"].is_null());
    let s = saga(&app, id).await;
    let resolutions: Vec<&str> =
        s["parked"].as_array().unwrap().iter().map(|p| p["resolution"].as_str().unwrap()).collect();
    assert_eq!(resolutions, vec!["skipped", "replayed"]);
    act(&app, id, json!({"action": "release", "expected_version": 2, "actor": "ops:e", "reason": "x"}))
        .await
        .expect_error(409, "not_allowed");
}

#[tokio::test]
async fn drain_report_counts_in_flight_sagas_per_version_and_state() {
    let app = TestApp::new().await;
    order(&app).await;
    order(&app).await;
    to_awaiting_payment(&app).await;
    let r = get_ops(&app, "/ops/drain").await;
    r.expect(200);
    assert_eq!(r.json["latest_version"], 1);
    let v1 = &r.json["versions"][0];
    assert_eq!(
        (v1["definition_version"].as_u64(), v1["in_flight"].as_i64(), v1["drained"].as_bool()),
        (Some(1), Some(3), Some(false))
    );
    assert_eq!(v1["states"], json!({"AWAITING_PAYMENT": 1, "RESERVING_INVENTORY": 2}));
}

#[tokio::test]
async fn bulk_previews_then_acts_with_progress() {
    let app = TestApp::new().await;
    let ids = [order(&app).await, order(&app).await, order(&app).await];
    let keep = order(&app).await;
    for id in ids {
        age(&app, id, 30).await;
    }
    let body = |dry: bool| json!({"filter": {"stuck": true}, "action": {"action": "cancel"}, "actor": "ops:f", "reason": "inventory outage", "dry_run": dry});
    let preview = app.post_json("/ops/bulk", &[AUTH], &body(true)).await;
    preview.expect(200);
    assert_eq!(preview.json["matched"], 3);
    assert_eq!((preview.json["checked"].as_u64(), preview.json["would_refuse"].as_u64()), (Some(3), Some(0)));
    // An action their state does not allow: the preview says so, and why.
    let release = json!({"filter": {"stuck": true}, "action": {"action": "release"}, "actor": "ops:f", "reason": "r", "dry_run": true});
    let refused = app.post_json("/ops/bulk", &[AUTH], &release).await;
    assert_eq!(refused.expect(200).json["would_refuse"], 3);
    assert_eq!(refused.json["refusals"], json!([{"reason": "the saga is not quarantined", "count": 3}]));
    let started = app.post_json("/ops/bulk", &[AUTH], &body(false)).await;
    started.expect(202);
    let job = started.json["job_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "bulk job finished", || async {
        get_ops(&app, &format!("/ops/jobs/{job}")).await.json["finished"] == true
    })
    .await;
    let status = get_ops(&app, &format!("/ops/jobs/{job}")).await;
    assert_eq!(
        (status.json["total"].as_u64(), status.json["succeeded"].as_u64(), status.json["failed"].as_u64()),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM orders WHERE status = 'CANCELLED'").await, 3);
    assert_eq!(saga(&app, keep).await["saga"]["state"], "RESERVING_INVENTORY");
    assert_eq!(app.count("SELECT COUNT(*) FROM ops_audit WHERE job_id IS NOT NULL").await, 3);
    app.post_json(
        "/ops/bulk",
        &[AUTH],
        &json!({"filter": {"colour": "red"}, "action": {"action": "cancel"}, "actor": "a", "reason": "b"}),
    )
    .await
    .expect_error(422, "invalid_parameter");
}

#[tokio::test]
async fn metrics_are_valid_openmetrics_and_move_with_the_scenario() {
    let app = TestApp::new().await;
    let before = String::from_utf8(app.get("/metrics").await.raw).unwrap();
    openmetrics_parser::openmetrics::parse_openmetrics(&before).unwrap_or_else(|e| panic!("{e:?}\n{before}"));
    for _ in 0..3 {
        order(&app).await;
    }
    let id = to_awaiting_payment(&app).await;
    act(&app, id, json!({"action": "cancel", "expected_version": 2, "actor": "ops:g", "reason": "test"}))
        .await
        .expect(200);
    let r = app.get("/metrics").await;
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = String::from_utf8(r.raw).unwrap();
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert!(parsed.families.contains_key("order_created"));
    assert!(text.contains("order_created_total{tenant_region=\"eu-west\"} 4"), "{text}");
    assert!(text.contains("ops_actions_total{action=\"cancel\",result=\"applied\"} 1"));
    assert!(text.contains("order_status_transition_seconds_count{from_status=\"PENDING\",to_status=\"CANCELLED\"} 1"));
    assert!(!text.contains(&format!("order_id=\"{id}\"")), "no order ids in labels");
}

/// A job's status over HTTP.
async fn job_status(app: &TestApp, job: &str) -> Value {
    get_ops(app, &format!("/ops/jobs/{job}")).await.expect(200).json.clone()
}

#[tokio::test]
async fn a_running_bulk_job_is_listed_and_stops_before_its_next_saga() {
    // One saga per second: the job is still running when it is stopped.
    let mut app = TestApp::new().await;
    if let Some(ops) = app.state.ops.as_mut() {
        ops.bulk_rate = 1;
    }
    app.router = order_saga::http::router(app.state.clone());
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = order(&app).await;
        age(&app, id, 30).await;
        ids.push(id);
    }
    let body = json!({"filter": {"stuck": true}, "action": {"action": "cancel"}, "actor": "ops:f", "reason": "outage"});
    let job = app.post_json("/ops/bulk", &[AUTH], &body).await.expect(202).json["job_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "the first saga is done", || async {
        job_status(&app, &job).await["done"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let listed = get_ops(&app, "/ops/jobs").await.expect(200).json.clone();
    assert_eq!(listed["jobs"][0]["job_id"], job.as_str());
    assert_eq!(listed["jobs"][0]["selection"], json!({"stuck": true}));
    let stop = app.call(Method::POST, &format!("/ops/jobs/{job}/cancel"), &[AUTH], None).await;
    assert_eq!(stop.expect(200).json["cancel_requested_by"], "ops token");
    eventually(Duration::from_secs(30), "the job is cancelled", || async {
        job_status(&app, &job).await["state"] == "cancelled"
    })
    .await;
    let st = job_status(&app, &job).await;
    let done = st["done"].as_u64().unwrap();
    assert!(done < 5, "stopped before the end: {st}");
    let results: Vec<&str> = st["results"].as_array().unwrap().iter().map(|r| r["result"].as_str().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| **r == "cancelled").count() as u64, 5 - done, "{st}");
    let cancelled_orders = app.count("SELECT COUNT(*) FROM orders WHERE status = 'CANCELLED'").await;
    assert_eq!(cancelled_orders as u64, done, "exactly the sagas it did are cancelled");
    assert_eq!(st["finished"], true);
    // Stopping it again, or a job that does not exist.
    app.call(Method::POST, &format!("/ops/jobs/{job}/cancel"), &[AUTH], None).await.expect(200);
    let none = format!("/ops/jobs/{}/cancel", uuid::Uuid::new_v4());
    app.call(Method::POST, &none, &[AUTH], None).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn a_bulk_job_whose_runner_died_is_resumed_without_acting_twice() {
    let app = TestApp::new().await;
    let mut selected = Vec::new();
    for _ in 0..3 {
        let id = order(&app).await;
        selected.push((oid(id), SagaVersion(saga(&app, id).await["saga"]["version"].as_u64().unwrap() as u32)));
    }
    // The first runner stores the job, acts on the first saga, and dies
    // before recording it.
    let dead = order_saga::ops::Ops::new(app.db.clone(), app.sagas.clone(), None, None);
    let b = cancel_job_request();
    let spec = dead.create_job(&b, &selected).await.unwrap();
    let first = order_saga::ops::Request {
        order_id: selected[0].0,
        action: order_saga::ops::Action::Cancel,
        expected_version: selected[0].1,
        actor: "ops:f".into(),
        reason: "outage".into(),
        dry_run: false,
        job_id: Some(spec.job_id.clone()),
    };
    dead.act(&first).await.unwrap();
    // Not stalled yet: nobody takes it.
    let other = order_saga::ops::Ops::new(app.db.clone(), app.sagas.clone(), None, None);
    assert_eq!(other.resume_stalled_jobs().await.unwrap(), 0);
    sqlx::query("UPDATE ops_jobs SET heartbeat_at = NOW(6) - INTERVAL 1 MINUTE").execute(&app.db.pool).await.unwrap();
    assert_eq!(other.resume_stalled_jobs().await.unwrap(), 1);
    eventually(Duration::from_secs(30), "the resumed job finishes", || async {
        job_status(&app, &spec.job_id).await["state"] == "finished"
    })
    .await;
    let st = job_status(&app, &spec.job_id).await;
    assert_eq!((st["succeeded"].as_u64(), st["failed"].as_u64(), st["resumed"].as_u64()), (Some(3), Some(0), Some(1)));
    for (id, _) in &selected {
        let audits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ops_audit WHERE order_id = ?")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        assert_eq!(audits, 1, "order {id} acted on once");
    }
    // The dead runner, back, finds the job is no longer its own.
    assert_eq!(dead.run_job(&spec, |_, _| {}).await, order_saga::ops::JobEnd::Lost);
}

#[tokio::test]
async fn at_most_four_bulk_jobs_run_at_once() {
    let app = TestApp::new().await;
    let id = order(&app).await;
    let ops = order_saga::ops::Ops::new(app.db.clone(), app.sagas.clone(), None, None);
    let b = cancel_job_request();
    for _ in 0..order_saga::store::jobs::MAX_RUNNING {
        ops.create_job(&b, &[(oid(id), SagaVersion::FIRST)]).await.unwrap();
    }
    let refused = ops.create_job(&b, &[(oid(id), SagaVersion::FIRST)]).await;
    assert!(matches!(refused, Err(order_saga::ops::OpsError::TooManyJobs(4))), "{refused:?}");
    let body = json!({"filter": {}, "action": {"action": "cancel"}, "actor": "ops:f", "reason": "outage"});
    app.post_json("/ops/bulk", &[AUTH], &body).await.expect_error(409, "too_many_jobs");
}

/// A bulk cancel over whatever is selected, as a job stores it.
fn cancel_job_request() -> order_saga::ops::BulkRequest {
    order_saga::ops::BulkRequest {
        filter: Default::default(),
        selection: json!({}),
        action: order_saga::ops::Action::Cancel,
        actor: "ops:f".into(),
        reason: "outage".into(),
        dry_run: false,
        limit: None,
        rate_per_second: 50,
    }
}

#[tokio::test]
async fn the_overview_leads_with_the_sagas_that_need_a_human_each_with_why() {
    let app = TestApp::new().await;
    let calm = order(&app).await;
    // Out of stock: waits for an operator from its first minute.
    let review = order(&app).await;
    app.deliver(&[out_of_stock(review)]).await;
    // The inventory participant has not answered for 10 minutes (max dwell 2m).
    let silent = order(&app).await;
    age(&app, silent, 10).await;
    // Quarantined by an undecodable message.
    let poisoned = order(&app).await;
    poison(&app, poisoned, "poison-attention").await;

    let o = get_ops(&app, "/ops/overview").await.expect(200).json.clone();
    let items = o["attention"]["items"].as_array().unwrap();
    let got: Vec<(i64, &str)> =
        items.iter().map(|i| (i["order_id"].as_i64().unwrap(), i["need"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        vec![(poisoned, "quarantined"), (review, "awaiting_operator"), (silent, "no_reply")],
        "most urgent first, the calm saga {calm} not listed"
    );
    assert!(items[0]["why"].as_str().unwrap().contains("bad bytes"), "{}", items[0]["why"]);
    assert!(items[1]["why"].as_str().unwrap().starts_with("Waiting for an operator for "), "{}", items[1]["why"]);
    assert!(items[1]["why"].as_str().unwrap().contains("Out of stock"), "{}", items[1]["why"]);
    assert!(items[2]["why"].as_str().unwrap().contains("No reply to its reserve_inventory command for 10 min"));
}

/// Delivers an undecodable inventory.reserved.v1 for `id`: its saga is quarantined.
async fn poison(app: &TestApp, id: i64, event_id: &str) {
    let poison = Inbound {
        event_id: event_id.into(),
        order_id: Some(oid(id)),
        event_name: "inventory.reserved.v1".into(),
        event: Err("bad bytes".into()),
        source: order_saga::orchestrator::Source::Kafka { topic: "test".into(), partition: 0, offset: 0 },
        trace: None,
        raw: None,
    };
    app.sagas.apply_batch(&app.db, &[poison], order_saga::orchestrator::LockMode::Wait).await.unwrap();
}

#[tokio::test]
async fn a_dry_run_says_in_words_that_an_overdue_timer_fires_at_once_and_where_it_leads() {
    let app = TestApp::new().await;
    let id = to_awaiting_payment(&app).await;
    poison(&app, id, "poison-timer").await;
    // The payment window closed while the saga was quarantined.
    sqlx::query("UPDATE saga_timers SET due_at = NOW(6) - INTERVAL 6 MINUTE WHERE order_id = ?")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let version = saga(&app, id).await["saga"]["version"].clone();
    let dry = act(
        &app,
        id,
        json!({"action": "skip_poison", "expected_version": version, "actor": "ops:a", "reason": "r", "dry_run": true}),
    )
    .await;
    let said: Vec<String> = dry.expect(200).json["consequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert!(said.contains(&"The quarantine is lifted: its parked events are applied now.".to_owned()), "{said:?}");
    assert!(
        said.iter().any(|c| c.starts_with("Timer payment_timeout is overdue by 6 min: it fires at once → CANCELLED")),
        "{said:?}"
    );
}

#[tokio::test]
async fn the_list_finds_an_order_or_a_customers_orders_finished_ones_too() {
    let app = TestApp::new().await;
    order(&app).await;
    let r = app.create_order(&key(), &order_body("cust-x", "eu-west", &[("A", 1, "5.00")])).await;
    let mine = r.expect(201).json["order_id"].as_i64().unwrap();
    let version = saga(&app, mine).await["saga"]["version"].clone();
    act(&app, mine, json!({"action": "cancel", "expected_version": version, "actor": "ops:a", "reason": "asked"}))
        .await
        .expect(200);
    let ids = |r: &Resp| {
        r.json["sagas"].as_array().unwrap().iter().map(|s| s["order_id"].as_i64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ids(get_ops(&app, "/ops/sagas?customer_id=cust-x").await.expect(200)), vec![mine], "terminal included");
    assert_eq!(ids(get_ops(&app, &format!("/ops/sagas?order_id={mine}")).await.expect(200)), vec![mine]);
    get_ops(&app, "/ops/sagas?order_id=abc").await.expect_error(422, "invalid_parameter");
}

#[tokio::test]
async fn a_saga_on_an_older_version_says_whether_the_newest_would_treat_it_differently() {
    let dir = std::env::temp_dir().join(format!("sagas-v2-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = std::fs::read_to_string("sagas/order.toml").unwrap();
    std::fs::write(dir.join("order.toml"), &v1).unwrap();
    let v2 = v1.replacen("version = 1", "version = 2", 1).replacen(
        "reason = \"PAYMENT_FAILED\"",
        "reason = \"PAYMENT_REFUSED\"",
        1,
    );
    std::fs::write(dir.join("order.v2.toml"), v2).unwrap();
    let app = TestApp::new().await;
    // Both start on the repository's version 1; the operator's view loads 1 and 2.
    let paying = to_awaiting_payment(&app).await;
    let reserving = order(&app).await;
    let catalog = order_saga::saga_files::load_catalog(&dir, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(catalog.latest().version, 2);
    let store = order_saga::orchestrator::SagaStore::new(std::sync::Arc::new(catalog), app.sagas.outbox.clone());
    let ops = order_saga::ops::Ops::new(app.db.clone(), store, None, None);
    let newer = ops.show(oid(paying)).await.unwrap()["newer_definition"].clone();
    assert_eq!(newer["version"], 2);
    assert_eq!(newer["verdict"]["verdict"], "next_differs", "{newer}");
    assert!(newer["verdict"]["how"][0].as_str().unwrap().contains("PAYMENT_REFUSED"), "{newer}");
    assert_eq!(ops.show(oid(reserving)).await.unwrap()["newer_definition"]["verdict"]["verdict"], "same");
    // On the newest version itself: nothing to compare.
    assert!(saga(&app, reserving).await["newer_definition"].is_null());
}

#[tokio::test]
async fn a_job_id_that_is_not_one_is_a_404_or_422_never_a_500() {
    let app = TestApp::new().await;
    for path in ["/ops/jobs/%C3%A9t%C3%A9", "/ops/jobs/x'%20OR%201=1"] {
        get_ops(&app, path).await.expect_error(404, "not_found");
        app.call(Method::POST, &format!("{path}/cancel"), &[AUTH], None).await.expect_error(404, "not_found");
    }
    get_ops(&app, "/ops/audit?job_id=%C3%A9t%C3%A9").await.expect_error(422, "invalid_parameter");
}
