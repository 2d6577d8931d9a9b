//! The ops console (`/ops/ui`): its HTTP handlers in-process, and the whole
//! console end to end in a real browser against the real daemon.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use crate::daemon::SagaEnv;
use crate::helpers::*;

const BEARER: (&str, &str) = ("authorization", "Bearer test-ops-token-0123456789");

/// Signs in; returns the cookie header value and the CSRF token.
async fn sign_in(app: &TestApp, actor: &str) -> (String, String) {
    let r = app.post_json("/ops/ui/session", &[], &json!({"token": OPS_TOKEN, "actor": actor})).await;
    r.expect(200);
    let set = r.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ops"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    (cookie, r.json["csrf_token"].as_str().unwrap().to_owned())
}

async fn order_in_reserving(app: &TestApp) -> i64 {
    let r = app.create_order(&key(), &order_body("c", "eu-west", &[("A", 1, "5.00")])).await;
    r.expect(201);
    r.json["order_id"].as_i64().unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_are_embedded_and_locked_down() {
    let app = TestApp::new().await;
    let page = app.get("/ops/ui").await;
    page.expect(200);
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
    let html = String::from_utf8(page.raw.clone()).unwrap();
    assert!(html.contains("/ops/ui/assets/app.js"));
    for (asset, ct) in [("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")] {
        let r = app.get(&format!("/ops/ui/assets/{asset}")).await;
        r.expect(200);
        assert!(r.headers.get("content-type").unwrap().to_str().unwrap().starts_with(ct), "{asset}");
    }
    app.get("/ops/ui/assets/secrets.txt").await.expect_error(404, "not_found");
}

#[tokio::test]
async fn without_an_ops_token_the_console_does_not_exist() {
    let mut app = TestApp::new().await;
    app.state.ops = None;
    app.router = order_saga::http::router(app.state.clone());
    app.get("/ops/ui").await.expect_error(404, "not_found");
    app.get("/ops/ui/assets/app.js").await.expect_error(404, "not_found");
    app.post_json("/ops/ui/session", &[], &json!({"token": OPS_TOKEN, "actor": "a"}))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn sign_in_needs_the_token_and_a_name() {
    let app = TestApp::new().await;
    app.post_json("/ops/ui/session", &[], &json!({"token": "wrong-token-0123456789", "actor": "alice"}))
        .await
        .expect_error(401, "unauthorized");
    app.post_json("/ops/ui/session", &[], &json!({"token": OPS_TOKEN, "actor": "  "}))
        .await
        .expect_error(422, "invalid_parameter");
    let r = app.call(Method::POST, "/ops/ui/session", &[], Some(b"token=x".to_vec())).await;
    r.expect_error(415, "unsupported_media_type");
    app.get("/ops/ui/session").await.expect_error(401, "unauthorized");
    assert_eq!(app.count("SELECT COUNT(*) FROM ops_sessions").await, 0);
}

#[tokio::test]
async fn a_session_needs_its_csrf_token_and_acts_under_the_signed_in_name() {
    let app = TestApp::new().await;
    let id = order_in_reserving(&app).await;
    let (cookie, csrf) = sign_in(&app, "alice").await;

    // The stored row holds a digest, not the id the browser has.
    let id_in_cookie = cookie.split('=').nth(1).unwrap().to_owned();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT id_hash FROM ops_sessions").fetch_one(&app.db.pool).await.unwrap();
    assert_ne!(stored, id_in_cookie.as_bytes());

    let who = app.call(Method::GET, "/ops/ui/session", &[("cookie", &cookie)], None).await;
    who.expect(200);
    assert_eq!(who.json["actor"], "alice");
    assert_eq!(who.json["csrf_token"], csrf.as_str());

    app.call(Method::GET, "/ops/overview", &[("cookie", &cookie)], None).await.expect_error(403, "csrf_token_invalid");
    app.call(Method::GET, "/ops/overview", &[("cookie", &cookie), ("x-csrf-token", &"0".repeat(64))], None)
        .await
        .expect_error(403, "csrf_token_invalid");
    app.call(Method::GET, "/ops/overview", &[("x-csrf-token", &csrf)], None).await.expect_error(401, "unauthorized");
    let ov = app.call(Method::GET, "/ops/overview", &[("cookie", &cookie), ("x-csrf-token", &csrf)], None).await;
    ov.expect(200);
    let reserving = ov.json["states"].as_array().unwrap().iter().find(|s| s["state"] == "RESERVING_INVENTORY").unwrap();
    assert_eq!(reserving["count"], 1);
    assert_eq!(reserving["max_dwell_seconds"], 120);

    // The actor is the session's, whatever the body says.
    let body = json!({"action": "cancel", "expected_version": 1, "reason": "customer called", "actor": "mallory"});
    let r = app
        .post_json(&format!("/ops/sagas/{id}/actions"), &[("cookie", &cookie), ("x-csrf-token", &csrf)], &body)
        .await;
    r.expect(200);
    let actor: String = sqlx::query_scalar("SELECT actor FROM ops_audit WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(actor, "alice");

    // Sign-out needs the CSRF token, then the session is over everywhere.
    app.call(Method::DELETE, "/ops/ui/session", &[("cookie", &cookie)], None)
        .await
        .expect_error(403, "csrf_token_invalid");
    let out = app.call(Method::DELETE, "/ops/ui/session", &[("cookie", &cookie), ("x-csrf-token", &csrf)], None).await;
    out.expect(204);
    assert!(out.headers.get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
    app.call(Method::GET, "/ops/overview", &[("cookie", &cookie), ("x-csrf-token", &csrf)], None)
        .await
        .expect_error(401, "unauthorized");
    assert_eq!(app.count("SELECT COUNT(*) FROM ops_sessions").await, 0);
}

#[tokio::test]
async fn an_idle_or_expired_session_is_over() {
    let app = TestApp::new().await;
    let (cookie, csrf) = sign_in(&app, "bob").await;
    let h = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    app.call(Method::GET, "/ops/overview", &h, None).await.expect(200);
    sqlx::query("UPDATE ops_sessions SET last_seen_at = NOW(6) - INTERVAL 61 MINUTE")
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.call(Method::GET, "/ops/overview", &h, None).await.expect_error(401, "unauthorized");

    let (cookie, csrf) = sign_in(&app, "bob").await;
    let h = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    sqlx::query("UPDATE ops_sessions SET expires_at = NOW(6) - INTERVAL 1 SECOND").execute(&app.db.pool).await.unwrap();
    app.call(Method::GET, "/ops/overview", &h, None).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn one_saga_offers_its_diagram_and_the_actions_its_state_allows() {
    let app = TestApp::new().await;
    let id = order_in_reserving(&app).await;
    let r = app.call(Method::GET, &format!("/ops/sagas/{id}"), &[BEARER], None).await;
    r.expect(200);
    let def = &r.json["definition"];
    let actions: Vec<&str> =
        def["actions_allowed_now"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"cancel") && actions.contains(&"retry_step"), "{actions:?}");
    assert!(!actions.contains(&"release"), "{actions:?}");
    let nodes = def["diagram"]["nodes"].as_array().unwrap();
    assert!(nodes.iter().any(|n| n["name"] == "RESERVING_INVENTORY" && n["column"] == 1), "{nodes:?}");
    assert!(r.json["dead_letters"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_overview_numbers_link_to_lists_that_explain_them() {
    let app = TestApp::new().await;
    let quiet = order_in_reserving(&app).await;
    let overdue = order_in_reserving(&app).await;
    app.deliver(&[order_saga::contracts::Message::from(order_saga::contracts::InventoryReserved {
        event_id: format!("res-{overdue}"),
        order_id: overdue,
        occurred_at: order_saga::contracts::TimestampMicros::from_datetime(chrono::Utc::now()),
        tenant_region: "eu-west".into(),
        command_id: None,
    })])
    .await;
    sqlx::query("UPDATE saga_timers SET due_at = NOW(6) - INTERVAL 5 MINUTE WHERE order_id = ?")
        .bind(overdue)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let ov = app.call(Method::GET, "/ops/overview", &[BEARER], None).await;
    ov.expect(200);
    assert_eq!(ov.json["timers_overdue"], 1);
    assert_eq!(ov.json["outbox_backlog"], app.count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await);
    let app = &app;
    let list = |q: &'static str| async move {
        let r = app.call(Method::GET, &format!("/ops/sagas?{q}"), &[BEARER], None).await;
        r.expect(200);
        r.json["sagas"].as_array().unwrap().iter().map(|s| s["order_id"].as_i64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(list("timers_overdue=true&terminal=true").await, vec![overdue]);
    // Nothing is published in-process: both sagas have outbox rows waiting.
    assert_eq!(list("unpublished=true&terminal=true").await, vec![quiet, overdue]);
    assert!(list("dead_lettered_within=1h&terminal=true").await.is_empty());
    app.call(Method::GET, "/ops/sagas?dead_lettered_within=soon", &[BEARER], None)
        .await
        .expect_error(422, "invalid_parameter");
}

/// The console in Debian's Chromium: sign in, find the stuck saga, see its
/// diagram and timeline, dry-run and confirm a cancel, a stale action, a bulk
/// job, CSRF and session refusals, sign-out, axe-core on every page, and no
/// request beyond the daemon's origin (tests/browser/console.mjs).
#[tokio::test(flavor = "multi_thread")]
async fn the_console_works_end_to_end_in_a_real_browser() {
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");

    let env = SagaEnv::new().await;
    // No participant simulator: every saga waits in RESERVING_INVENTORY.
    let daemon = env.start_daemon(&[]).await;
    let body = |region: &str| order_body("c-e2e", region, &[("SKU-1", 2, "19.99")]);
    let stuck = daemon.create_order(&body("eu-west")).await;
    let stale = daemon.create_order(&body("eu-west")).await;
    let poisoned = daemon.create_order(&body("eu-west")).await;
    let review = daemon.create_order(&body("eu-west")).await;
    let overdue = daemon.create_order(&body("eu-west")).await;
    let mut bulk = Vec::new();
    for _ in 0..3 {
        bulk.push(daemon.create_order(&body("ap-closed")).await);
    }
    for id in [stuck, stale, poisoned, review, overdue].iter().chain(&bulk) {
        env.wait_state(*id, "RESERVING_INVENTORY", Duration::from_secs(30)).await;
    }
    // Out of stock: PENDING_REVIEW, where only an operator moves it on.
    {
        use order_saga::contracts::*;
        env.publish(&Message::from(InventoryReservationFailed {
            event_id: format!("rf-{review}"),
            order_id: review as i64,
            occurred_at: TimestampMicros::from_datetime(chrono::Utc::now()),
            tenant_region: "eu-west".into(),
            command_id: None,
            reason: "OUT_OF_STOCK".into(),
            shortages: vec![Shortage { sku: "SKU-1".into(), requested_qty: 2, available_qty: 0 }],
        }))
        .await;
    }
    env.wait_state(review, "PENDING_REVIEW", Duration::from_secs(30)).await;
    // Waiting for payment, then quarantined by an undecodable message while
    // its payment window closes: skipping the poison fires the timer at once.
    {
        use order_saga::contracts::*;
        env.publish(&Message::from(InventoryReserved {
            event_id: format!("res-{overdue}"),
            order_id: overdue as i64,
            occurred_at: TimestampMicros::from_datetime(chrono::Utc::now()),
            tenant_region: "eu-west".into(),
            command_id: None,
        }))
        .await;
    }
    env.wait_state(overdue, "AWAITING_PAYMENT", Duration::from_secs(30)).await;
    env.publish_raw(order_saga::contracts::MessageKind::PaymentAuthorized, &overdue.to_string(), b"\x00junk", &[])
        .await;
    crate::helpers::eventually(Duration::from_secs(30), "the overdue saga is quarantined", || async {
        env.count_for("SELECT COUNT(*) FROM saga_instances WHERE order_id = ? AND quarantined_at IS NOT NULL", overdue)
            .await
            == 1
    })
    .await;
    sqlx::query("UPDATE saga_timers SET due_at = NOW(6) - INTERVAL 6 MINUTE WHERE order_id = ?")
        .bind(overdue)
        .execute(&env.db.pool)
        .await
        .unwrap();
    // A message that cannot be decoded for one order: dead-lettered, its saga quarantined.
    env.publish_raw(order_saga::contracts::MessageKind::InventoryReserved, &poisoned.to_string(), b"\x00junk", &[])
        .await;
    crate::helpers::eventually(Duration::from_secs(30), "the poisoned saga is quarantined", || async {
        env.count_for("SELECT COUNT(*) FROM saga_instances WHERE order_id = ? AND quarantined_at IS NOT NULL", poisoned)
            .await
            == 1
    })
    .await;
    // Overstay RESERVING_INVENTORY's max_dwell (2m).
    sqlx::query("UPDATE saga_instances SET state_entered_at = NOW(6) - INTERVAL 10 MINUTE WHERE order_id = ?")
        .bind(stuck)
        .execute(&env.db.pool)
        .await
        .unwrap();

    let vars = [
        ("CONSOLE_BASE", daemon.base.clone()),
        ("CONSOLE_TOKEN", crate::helpers::OPS_TOKEN.to_owned()),
        ("CONSOLE_STUCK_ID", stuck.to_string()),
        ("CONSOLE_STALE_ID", stale.to_string()),
        ("CONSOLE_POISONED_ID", poisoned.to_string()),
        ("CONSOLE_REVIEW_ID", review.to_string()),
        ("CONSOLE_OVERDUE_ID", overdue.to_string()),
        ("CONSOLE_BULK_REGION", "ap-closed".to_owned()),
        ("CONSOLE_BULK_COUNT", bulk.len().to_string()),
    ];
    run_browser_script("console.mjs", &vars, &daemon).await;

    // What the browser did is what the database holds.
    for id in [stuck, stale].iter().chain(&bulk) {
        assert_eq!(env.order_status(*id).await, "CANCELLED", "order {id}");
    }
    let audit: Vec<(u64, String, String, String)> =
        sqlx::query_as("SELECT order_id, actor, result, reason FROM ops_audit ORDER BY id")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    let rows = |id: u64| audit.iter().filter(move |a| a.0 == id).collect::<Vec<_>>();
    assert_eq!(
        rows(stuck).iter().map(|a| (a.1.as_str(), a.2.as_str())).collect::<Vec<_>>(),
        vec![("e2e-operator", "applied")]
    );
    let on_stale: Vec<&str> = rows(stale).iter().map(|a| a.2.as_str()).collect();
    assert_eq!(on_stale, vec!["applied", "refused"], "the other tab's cancel, then the stale confirm refused");
    for id in &bulk {
        assert_eq!(rows(*id).len(), 1, "order {id}: one bulk action");
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ops_sessions").fetch_one(&env.db.pool).await.unwrap(),
        0,
        "signing out removed the session"
    );
    assert!(
        std::fs::read_dir(&artifacts).unwrap().filter_map(Result::ok).any(|e| e.file_name() == "04-saga.png"),
        "screenshots are kept in {}",
        artifacts.display()
    );
}

/// The console signs in through a real OpenID Provider (oidc-provider under
/// Node, another site than the console) in Chromium: authorization code with
/// PKCE, state bound to the browser, the ID token's subject as the actor and
/// its role claim as the role (tests/browser/oidc.mjs).
#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_through_an_openid_provider_in_a_real_browser() {
    let env = SagaEnv::new().await;
    let idp_port = crate::daemon::free_port();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let daemon = env
        .start_daemon(&[
            ("ORDER_SAGA_OPS_OIDC_ISSUER", &issuer),
            ("ORDER_SAGA_OPS_OIDC_CLIENT_ID", "ops-console"),
            ("ORDER_SAGA_OPS_OIDC_CLIENT_SECRET", "ops-console-secret"),
            ("ORDER_SAGA_OPS_OIDC_SCOPES", "profile roles"),
        ])
        .await;
    // The console on `localhost`, the provider on `127.0.0.1`: two sites, as
    // in production, so the provider's redirect back is a cross-site navigation.
    let base = daemon.base.replace("127.0.0.1", "localhost");
    let _idp = crate::auth::RealIdp::start_on(idp_port, Some(&format!("{base}/ops/ui/callback"))).await;
    let saga = daemon.create_order(&order_body("c-oidc", "eu-west", &[("SKU-1", 1, "9.99")])).await;
    env.wait_state(saga, "RESERVING_INVENTORY", Duration::from_secs(30)).await;

    let vars = [("CONSOLE_BASE", base.clone()), ("CONSOLE_SAGA_ID", saga.to_string())];
    run_browser_script("oidc.mjs", &vars, &daemon).await;
    // alice's cancel is hers in the audit trail; mallory's sign-in was refused
    // and counted, the forged callback too.
    let audit: Vec<(String, String)> = sqlx::query_as("SELECT actor, result FROM ops_audit WHERE order_id = ?")
        .bind(saga)
        .fetch_all(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(audit, vec![("alice".to_owned(), "applied".to_owned())]);
    assert_eq!(env.order_status(saga).await, "CANCELLED");
    let metrics = daemon.metrics().await;
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ops_auth_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 2.0, "the refused sign-ins are counted: {failures}");
    let unfinished: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ops_sign_ins").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(unfinished, 0, "each sign-in's state is used once");
}

#[tokio::test]
async fn identity_provider_sign_ins_that_cannot_finish_send_the_browser_back_with_why() {
    // A provider that does not answer (nothing listens on the port).
    let issuer = format!("http://127.0.0.1:{}", crate::daemon::free_port());
    let app = TestApp::with_flags(&["--ops-oidc-issuer", &issuer, "--ops-oidc-client-id", "ops-console"]).await;
    let r = app.get("/ops/ui/session").await;
    r.expect_error(401, "unauthorized");
    assert_eq!(r.json["error"]["details"]["sign_in"], json!({"identity_provider": true, "token": true}));
    let back = |r: &Resp| r.headers.get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let r = app.call(Method::GET, "/ops/ui/sign-in", &[("host", "localhost:8080")], None).await;
    assert_eq!((r.status.as_u16(), back(&r).as_str()), (303, "/ops/ui?sign_in_error=unavailable"));
    // A callback whose state is not the browser's cookie, or is unknown.
    let r = app.call(Method::GET, "/ops/ui/callback?code=c&state=s1", &[], None).await;
    assert_eq!((r.status.as_u16(), back(&r).as_str()), (303, "/ops/ui?sign_in_error=mismatch"));
    let cookie = [("cookie", "order_saga_ops_sign_in=s1")];
    let r = app.call(Method::GET, "/ops/ui/callback?code=c&state=s1", &cookie, None).await;
    assert_eq!((r.status.as_u16(), back(&r).as_str()), (303, "/ops/ui?sign_in_error=expired"));
    assert_eq!(app.state.metrics.ops.ops_auth_failures_total.get(), 3, "each failed sign-in is counted");
    assert_eq!(app.count("SELECT COUNT(*) FROM ops_sessions").await, 0);
}

/// Runs a browser script of tests/browser with `vars` (and `CHROMIUM`,
/// `CONSOLE_ARTIFACTS`); fails the test with its output when it fails.
async fn run_browser_script(script: &str, vars: &[(&str, String)], daemon: &crate::daemon::Daemon) {
    let chromium = std::env::var("ORDER_SAGA_TEST_CHROMIUM").unwrap_or_else(|_| {
        panic!(
            "ORDER_SAGA_TEST_CHROMIUM is not set: the console's browser tests need Chromium and tests/browser's \
             npm packages; `scripts/dev test` installs both and sets it"
        )
    });
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` (scripts/dev test does)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(root.join("tests/browser").join(script))
        .env("CONSOLE_ARTIFACTS", root.join("target/browser-artifacts"))
        .env("CHROMIUM", &chromium);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run node (Node 20 is needed for the browser test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}\n(daemon log: {})",
        String::from_utf8_lossy(&out.stderr),
        daemon.log.display()
    );
}

/// Bulk jobs in Chromium: stopped from their page, and one whose daemon is
/// killed mid-way is listed after the restart and resumed to the end by the
/// new daemon, acting on each saga once (tests/browser/jobs.mjs).
#[tokio::test(flavor = "multi_thread")]
async fn bulk_jobs_stop_and_survive_a_daemon_restart_in_a_real_browser() {
    let env = SagaEnv::new().await;
    // Two sagas a second: jobs last long enough to be stopped and interrupted.
    let slow = [("ORDER_SAGA_OPS_BULK_RATE", "2")];
    let daemon = env.start_daemon(&slow).await;
    let body = |region: &str| order_body("c-jobs", region, &[("SKU-1", 1, "9.99")]);
    let (mut to_stop, mut to_resume) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        to_stop.push(daemon.create_order(&body("ap-stop")).await);
    }
    for _ in 0..6 {
        to_resume.push(daemon.create_order(&body("ap-resume")).await);
    }
    for id in to_stop.iter().chain(&to_resume) {
        env.wait_state(*id, "RESERVING_INVENTORY", Duration::from_secs(30)).await;
    }
    fn vars(phase: &str, total: usize, extra: (&'static str, String), base: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CONSOLE_BASE", base.to_owned()),
            ("CONSOLE_TOKEN", crate::helpers::OPS_TOKEN.to_owned()),
            ("JOBS_PHASE", phase.to_owned()),
            ("JOBS_TOTAL", total.to_string()),
            extra,
        ]
    }
    run_browser_script("jobs.mjs", &vars("stop", 30, ("JOBS_REGION", "ap-stop".into()), &daemon.base), &daemon).await;

    // A job the daemon dies in the middle of.
    let started = daemon
        .http
        .post(format!("{}/ops/bulk", daemon.base))
        .bearer_auth(crate::helpers::OPS_TOKEN)
        .json(&json!({"filter": {"tenant_region": "ap-resume"}, "action": {"action": "cancel"}, "actor": "e2e-script", "reason": "resume me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let job: serde_json::Value = started.json().await.unwrap();
    let job = job["job_id"].as_str().unwrap().to_owned();
    crate::helpers::eventually(Duration::from_secs(30), "the job has begun", || async {
        let done: Option<u32> = sqlx::query_scalar("SELECT done FROM ops_jobs WHERE job_id = ?")
            .bind(&job)
            .fetch_optional(&env.db.pool)
            .await
            .unwrap();
        done.is_some_and(|d| d >= 1)
    })
    .await;
    drop(daemon); // SIGKILL
    let daemon = env.start_daemon(&slow).await;
    run_browser_script("jobs.mjs", &vars("resumed", 6, ("JOBS_RESUMED_ID", job.clone()), &daemon.base), &daemon).await;

    for id in &to_resume {
        assert_eq!(env.order_status(*id).await, "CANCELLED", "order {id}");
        let acted = env.count_for("SELECT COUNT(*) FROM ops_audit WHERE order_id = ?", *id).await;
        assert_eq!(acted, 1, "order {id}: acted on once, across the restart");
    }
    let untouched: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ops_job_items WHERE result = 'cancelled'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    let still_reserving = env
        .count_for(
            "SELECT COUNT(*) FROM saga_instances WHERE state = 'RESERVING_INVENTORY' AND order_id >= ?",
            to_stop[0],
        )
        .await;
    assert!(
        untouched > 0 && untouched == still_reserving,
        "the stopped job left {untouched} sagas alone, {still_reserving} still wait"
    );
}
