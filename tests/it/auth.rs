//! Bearer JWTs on the orders API, end to end through the daemon's router,
//! against a test identity provider serving its JWKS over HTTP.

use std::time::Duration;

use axum::http::Method;
use order_saga::devtools::idp::TestIdp;
use serde_json::{Value, json};

use crate::helpers::*;

/// An app requiring tokens from `idp`.
async fn guarded(idp: &TestIdp) -> TestApp {
    guarded_with(idp, &[]).await
}

/// An app requiring tokens from `idp`, with more flags.
async fn guarded_with(idp: &TestIdp, extra: &[&str]) -> TestApp {
    let mut flags =
        vec!["--auth-jwks-url", &idp.jwks_url, "--auth-issuer", &idp.issuer, "--auth-audience", &idp.audience];
    flags.extend_from_slice(extra);
    TestApp::with_flags(&flags).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn create_as(app: &TestApp, token: &str, region: &str) -> Resp {
    let auth = bearer(token);
    let body = order_body("c-1", region, &[("A", 1, "5.00")]);
    let k = key();
    app.post_json("/orders", &[("idempotency-key", &k), ("authorization", &auth)], &body).await
}

async fn get_as(app: &TestApp, token: &str, path: &str) -> Resp {
    app.call(Method::GET, path, &[("authorization", &bearer(token))], None).await
}

async fn status_as(app: &TestApp, token: &str, id: u64, body: &Value) -> Resp {
    app.post_json(&format!("/orders/{id}/status"), &[("authorization", &bearer(token))], body).await
}

fn challenge(r: &Resp) -> String {
    r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn every_orders_endpoint_answers_401_without_a_valid_token() {
    let idp = TestIdp::spawn().await.unwrap();
    let app = guarded(&idp).await;
    let admin = idp.token_for("alice", "orders:read orders:write orders:status");
    let id = create_as(&app, &admin, "eu-west").await.expect(201).json["order_id"].as_u64().unwrap();
    let expired = {
        let mut c = idp.claims("alice", "orders:read orders:write orders:status");
        c["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
        idp.token("k-es", &c)
    };
    let all = "orders:read orders:write orders:status";
    let foreign_audience = {
        let mut c = idp.claims("alice", all);
        c["aud"] = json!("another-api");
        idp.token("k-es", &c)
    };
    let forged = idp.hmac_forgery("k-es", &idp.claims("mallory", all));
    let unsigned = TestIdp::unsigned(&idp.claims("mallory", all));
    let body = order_body("c-1", "eu-west", &[("A", 1, "5.00")]).to_string().into_bytes();
    let change = json!({"to_status": "CANCELLED"}).to_string().into_bytes();
    let requests: [(Method, String, Option<Vec<u8>>); 4] = [
        (Method::POST, "/orders".into(), Some(body)),
        (Method::GET, format!("/orders/{id}"), None),
        (Method::GET, "/orders/search".into(), None),
        (Method::POST, format!("/orders/{id}/status"), Some(change)),
    ];
    for (method, path, body) in requests {
        let k = key();
        let base = [("content-type", "application/json"), ("idempotency-key", k.as_str())];
        let r = app.call(method.clone(), &path, &base, body.clone()).await;
        r.expect_error(401, "unauthorized");
        assert_eq!(challenge(&r), "Bearer realm=\"order-saga\"", "{method} {path}");
        for (what, token) in
            [("expired", &expired), ("audience", &foreign_audience), ("hmac", &forged), ("none", &unsigned)]
        {
            let auth = bearer(token);
            let mut h = base.to_vec();
            h.push(("authorization", &auth));
            let r = app.call(method.clone(), &path, &h, body.clone()).await;
            r.expect_error(401, "unauthorized");
            assert!(challenge(&r).contains("error=\"invalid_token\""), "{what}: {method} {path}: {}", challenge(&r));
        }
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1, "nothing was created without a valid token");
    let metrics = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.raw);
    assert!(text.contains("auth_failures_total{reason=\"invalid\"} 8"), "{text}");
}

#[tokio::test]
async fn each_endpoint_needs_its_scope() {
    let idp = TestIdp::spawn().await.unwrap();
    let app = guarded(&idp).await;
    let reader = idp.token_for("dashboard", "orders:read");
    let writer = idp.token_for("checkout", "orders:write");
    let r = create_as(&app, &reader, "eu-west").await;
    r.expect_error(403, "insufficient_scope");
    assert_eq!(r.json["error"]["details"]["required_scope"], "orders:write");
    assert!(challenge(&r).contains("error=\"insufficient_scope\", scope=\"orders:write\""));
    let id = create_as(&app, &writer, "eu-west").await.expect(201).json["order_id"].as_u64().unwrap();
    get_as(&app, &writer, &format!("/orders/{id}")).await.expect_error(403, "insufficient_scope");
    get_as(&app, &reader, &format!("/orders/{id}")).await.expect(200);
    get_as(&app, &reader, "/orders/search").await.expect(200);
    let cancel = json!({"to_status": "CANCELLED", "reason_code": "CUSTOMER_REQUEST"});
    status_as(&app, &reader, id, &cancel).await.expect_error(403, "insufficient_scope");
    status_as(&app, &writer, id, &cancel).await.expect_error(403, "insufficient_scope");
    status_as(&app, &idp.token_for("support", "orders:status"), id, &cancel).await.expect(200);
}

#[tokio::test]
async fn the_actor_is_the_tokens_subject_whatever_the_body_says() {
    let idp = TestIdp::spawn().await.unwrap();
    let app = guarded(&idp).await;
    let checkout = idp.token_for("checkout-service", "orders:write");
    let id = create_as(&app, &checkout, "eu-west").await.expect(201).json["order_id"].as_u64().unwrap();
    let support = idp.token_for("alice", "orders:status");
    let cancel = json!({"to_status": "CANCELLED", "reason_code": "CUSTOMER_REQUEST", "actor": "ops:bob"});
    status_as(&app, &support, id, &cancel).await.expect(200);
    let actors: Vec<(String, String)> =
        sqlx::query_as("SELECT to_status, actor FROM order_status_history WHERE order_id = ? ORDER BY history_id")
            .bind(id)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        actors,
        [
            ("PENDING".to_owned(), "checkout-service".to_owned()),
            ("CANCELLED".to_owned(), "alice (on behalf of ops:bob)".to_owned())
        ]
    );
    // The published event says the same.
    let published = outbox_of(&app.db, id, order_saga::contracts::MessageKind::OrderStatusChanged).await;
    let last = published.last().cloned().unwrap_or_default();
    assert_eq!(last["actor"], "alice (on behalf of ops:bob)", "{published:?}");
}

#[tokio::test]
async fn a_region_limited_caller_sees_and_changes_only_its_regions() {
    let idp = TestIdp::spawn().await.unwrap();
    let app = guarded(&idp).await;
    let all = "orders:read orders:write orders:status";
    let global = idp.token_for("ops-bot", all);
    let eu_claims = {
        let mut c = idp.claims("eu-agent", all);
        c["tenant_regions"] = json!(["eu-west"]);
        c
    };
    let eu = idp.token("k-es", &eu_claims);
    let ours = create_as(&app, &global, "eu-west").await.expect(201).json["order_id"].as_u64().unwrap();
    let theirs = create_as(&app, &global, "us-east").await.expect(201).json["order_id"].as_u64().unwrap();
    create_as(&app, &eu, "us-east").await.expect_error(403, "region_not_allowed");
    create_as(&app, &eu, "eu-west").await.expect(201);
    get_as(&app, &eu, &format!("/orders/{ours}")).await.expect(200);
    get_as(&app, &eu, &format!("/orders/{theirs}")).await.expect_error(404, "order_not_found");
    let page = get_as(&app, &eu, "/orders/search").await;
    let regions: Vec<&str> = page.expect(200).json["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["tenant_region"].as_str())
        .collect();
    assert_eq!(regions, ["eu-west", "eu-west"]);
    let asked = get_as(&app, &eu, "/orders/search?tenant_region=us-east").await;
    assert_eq!(asked.expect(200).json["orders"], json!([]), "asking for another region finds nothing");
    let all_page = get_as(&app, &global, "/orders/search").await;
    assert_eq!(all_page.expect(200).json["orders"].as_array().map(Vec::len), Some(3));
    let cancel = json!({"to_status": "CANCELLED", "reason_code": "CUSTOMER_REQUEST"});
    status_as(&app, &eu, theirs, &cancel).await.expect_error(404, "order_not_found");
    status_as(&app, &eu, ours, &cancel).await.expect(200);
}

#[tokio::test]
async fn an_unreachable_identity_provider_is_a_503_to_retry_not_a_bad_token() {
    let idp = TestIdp::spawn().await.unwrap();
    idp.set_down(true);
    let app = guarded(&idp).await;
    let token = idp.token_for("alice", "orders:read");
    get_as(&app, &token, "/orders/search").await.expect_error(503, "identity_provider_unavailable");
    idp.set_down(false);
    get_as(&app, &token, "/orders/search").await.expect(200);
}

#[tokio::test]
async fn an_open_api_needs_the_actor_in_the_body() {
    let app = TestApp::new().await;
    let id = app.create_order(&key(), &order_body("c-1", "eu-west", &[("A", 1, "5.00")])).await;
    let id = id.expect(201).json["order_id"].as_u64().unwrap();
    let r = app.post_json(&format!("/orders/{id}/status"), &[], &json!({"to_status": "CANCELLED"})).await;
    r.expect_error(422, "validation_failed");
    assert_eq!(r.json["error"]["details"]["fields"][0]["field"], "/actor");
}

async fn ops_get(app: &TestApp, token: &str, path: &str) -> Resp {
    app.call(Method::GET, path, &[("authorization", &bearer(token))], None).await
}

async fn ops_post(app: &TestApp, token: &str, path: &str, body: &Value) -> Resp {
    app.post_json(path, &[("authorization", &bearer(token))], body).await
}

#[tokio::test]
async fn operators_have_roles_read_act_admin_and_are_audited_as_themselves() {
    let idp = TestIdp::spawn().await.unwrap();
    let app = guarded(&idp).await;
    let creator = idp.token_for("checkout", "orders:write");
    let id = create_as(&app, &creator, "eu-west").await.expect(201).json["order_id"].as_u64().unwrap();
    let (reader, actor, admin) = (
        idp.token_for("l1-oncall", "ops:read"),
        idp.token_for("alice", "ops:act"),
        idp.token_for("sre-lead", "ops:admin"),
    );
    let nobody = idp.token_for("checkout", "orders:read orders:write");
    ops_get(&app, &nobody, "/ops/overview").await.expect_error(403, "insufficient_scope");
    for t in [&reader, &actor, &admin] {
        ops_get(&app, t, "/ops/overview").await.expect(200);
        ops_get(&app, t, &format!("/ops/sagas/{id}")).await.expect(200);
    }
    let version = ops_get(&app, &reader, &format!("/ops/sagas/{id}")).await.json["saga"]["version"].as_u64().unwrap();
    let cancel =
        json!({"action": "cancel", "expected_version": version, "actor": "ops:bob", "reason": "customer called"});
    let path = format!("/ops/sagas/{id}/actions");
    let r = ops_post(&app, &reader, &path, &cancel).await;
    r.expect_error(403, "insufficient_scope");
    assert_eq!(r.json["error"]["details"]["required_scope"], "ops:act");
    let release = json!({"action": "release", "expected_version": version, "reason": "fixed"});
    ops_post(&app, &actor, &path, &release).await.expect_error(403, "insufficient_scope");
    let bulk = json!({"filter": {"stuck": true}, "action": {"action": "cancel"}, "reason": "outage", "dry_run": true});
    ops_post(&app, &actor, "/ops/bulk", &bulk).await.expect_error(403, "insufficient_scope");
    ops_post(&app, &admin, "/ops/bulk", &bulk).await.expect(200);
    ops_post(&app, &actor, &path, &cancel).await.expect(200);
    let audit = ops_get(&app, &reader, &format!("/ops/audit?order_id={id}")).await;
    let actors: Vec<&str> =
        audit.json["audit"].as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
    assert_eq!(actors, ["alice (on behalf of ops:bob)"], "the token's subject, not the body's actor");
    // A token nobody issued is refused, logged and counted.
    let forged = idp.hmac_forgery("k-es", &idp.claims("mallory", "ops:admin"));
    ops_get(&app, &forged, "/ops/overview").await.expect_error(401, "unauthorized");
    assert_eq!(app.state.metrics.ops.ops_auth_failures_total.get(), 1);
    // The shared ops token still works, as an admin.
    ops_post(
        &app,
        OPS_TOKEN,
        "/ops/bulk",
        &json!({"filter": {"stuck": true}, "action": {"action": "cancel"},
        "actor": "ops:carol", "reason": "outage", "dry_run": true}),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn a_refused_console_sign_in_is_counted() {
    let app = TestApp::new().await;
    let r =
        app.post_json("/ops/ui/session", &[], &json!({"token": "guess-0123456789abcdef", "actor": "mallory"})).await;
    r.expect_error(401, "unauthorized");
    assert_eq!(app.state.metrics.ops.ops_auth_failures_total.get(), 1);
}

/// oidc-provider (a certified OpenID Provider, tests/browser/idp.mjs) under
/// Node: its RS256 JWT access tokens from the client-credentials grant, its
/// JWKS as it publishes it.
pub struct RealIdp {
    pub issuer: String,
    _node: tokio::process::Child,
}

const RESOURCE: &str = "https://orders.order-saga.test";

impl RealIdp {
    async fn start() -> RealIdp {
        RealIdp::start_on(crate::daemon::free_port(), None).await
    }

    /// On `port`; with `console_redirect`, also the console's client and
    /// the development login page.
    pub async fn start_on(port: u16, console_redirect: Option<&str>) -> RealIdp {
        use tokio::io::AsyncBufReadExt as _;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            root.join("node_modules/oidc-provider").exists(),
            "tests/browser's npm packages are missing: `scripts/dev test` installs them (npm ci --prefix tests/browser)"
        );
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(root.join("idp.mjs")).env("PORT", port.to_string());
        if let Some(r) = console_redirect {
            cmd.env("CONSOLE_REDIRECT", r);
        }
        let mut node = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node (Node.js 20 or later) runs the OpenID Provider");
        let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    return issuer.to_owned();
                }
            }
            panic!("the OpenID Provider exited before it was ready")
        })
        .await
        .expect("the OpenID Provider did not start within 60 s");
        // Keep reading what it prints (its development warnings): a closed
        // pipe would kill it with EPIPE.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[idp] {line}");
            }
        });
        RealIdp { issuer, _node: node }
    }

    /// An access token from the client-credentials grant.
    async fn token(&self, client: &str, scope: &str) -> String {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", scope)
            .append_pair("resource", RESOURCE)
            .finish();
        let r = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {v}")).to_owned()
    }
}

#[tokio::test]
async fn tokens_of_a_real_openid_provider_are_accepted_with_their_scopes() {
    let op = RealIdp::start().await;
    let discovery: Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", op.issuer)).await.unwrap().json().await.unwrap();
    let jwks = discovery["jwks_uri"].as_str().unwrap().to_owned();
    let app =
        TestApp::with_flags(&["--auth-jwks-url", &jwks, "--auth-issuer", &op.issuer, "--auth-audience", RESOURCE])
            .await;
    let checkout = op.token("checkout-service", "orders:read orders:write").await;
    let id = create_as(&app, &checkout, "eu-west").await.expect(201).json["order_id"].as_u64().unwrap();
    get_as(&app, &checkout, &format!("/orders/{id}")).await.expect(200);
    let cancel = json!({"to_status": "CANCELLED", "reason_code": "CUSTOMER_REQUEST"});
    status_as(&app, &checkout, id, &cancel).await.expect_error(403, "insufficient_scope");
    let support = op.token("support-tool", "orders:status").await;
    status_as(&app, &support, id, &cancel).await.expect(200);
    let actors: Vec<String> =
        sqlx::query_scalar("SELECT actor FROM order_status_history WHERE order_id = ? ORDER BY history_id")
            .bind(id)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(actors, ["checkout-service", "support-tool"]);
    let dashboard = op.token("l1-dashboard", "ops:read").await;
    ops_get(&app, &dashboard, "/ops/overview").await.expect(200);
    ops_post(&app, &dashboard, "/ops/bulk", &json!({"filter": {}, "action": {"action": "cancel"}, "reason": "x"}))
        .await
        .expect_error(403, "insufficient_scope");
}

#[tokio::test]
async fn named_ops_credentials_carry_their_role_and_name() {
    use sha2::Digest as _;
    let hex_of = |s: &str| hex::encode(sha2::Sha256::digest(s.as_bytes()));
    let bot = format!("deploy-bot:act:{}", hex_of("bot-secret-0123456789"));
    let viewer = format!("grafana:read:{}", hex_of("viewer-secret-0123456789"));
    let app = TestApp::with_flags(&["--ops-credential", &bot, "--ops-credential", &viewer]).await;
    let id = app.create_order(&key(), &order_body("c-1", "eu-west", &[("A", 1, "5.00")])).await;
    let id = id.expect(201).json["order_id"].as_u64().unwrap();
    let path = format!("/ops/sagas/{id}");
    let version = ops_get(&app, "viewer-secret-0123456789", &path).await.expect(200).json["saga"]["version"].clone();
    let cancel = json!({"action": "cancel", "expected_version": version, "reason": "customer called"});
    let act = format!("{path}/actions");
    ops_post(&app, "viewer-secret-0123456789", &act, &cancel).await.expect_error(403, "insufficient_scope");
    ops_post(&app, "bot-secret-0123456789", &act, &cancel).await.expect(200);
    let audit = ops_get(&app, "viewer-secret-0123456789", &format!("/ops/audit?order_id={id}")).await;
    assert_eq!(audit.json["audit"][0]["actor"], "deploy-bot");
    ops_get(&app, "not-a-credential-0123456789", &path).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_console_session() {
    let idp = TestIdp::spawn().await.unwrap();
    let app = guarded(&idp).await;
    let mut sessions = Vec::new();
    for who in ["alice", "bob"] {
        let r = app.post_json("/ops/ui/session", &[], &json!({"token": OPS_TOKEN, "actor": who})).await;
        let cookie = r.expect(200).headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        sessions.push((cookie, r.json["csrf_token"].as_str().unwrap().to_owned()));
    }
    let call = |token: String| {
        let app = &app;
        async move { app.call(Method::DELETE, "/ops/sessions", &[("authorization", &bearer(&token))], None).await }
    };
    call(idp.token_for("alice", "ops:act")).await.expect_error(403, "insufficient_scope");
    let r = call(idp.token_for("sre-lead", "ops:admin")).await;
    assert_eq!(r.expect(200).json["ended"], 2);
    for (cookie, csrf) in &sessions {
        let h = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
        app.call(Method::GET, "/ops/overview", &h, None).await.expect_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn each_caller_has_its_own_request_budget() {
    let idp = TestIdp::spawn().await.unwrap();
    let app = guarded_with(&idp, &["--http-rate-limit", "1", "--http-rate-burst", "2"]).await;
    let (alice, bob) = (idp.token_for("alice", "orders:read"), idp.token_for("bob", "orders:read"));
    // The burst goes through, then the rate (1/s) holds the rest back: within
    // a few requests one is refused (unless each took a second).
    let mut served = 0;
    let r = loop {
        let r = get_as(&app, &alice, "/orders/search").await;
        if r.status.as_u16() == 429 {
            break r;
        }
        r.expect(200);
        served += 1;
        assert!(served < 50, "never limited");
    };
    assert!(served >= 2, "the burst of 2 is served first");
    r.expect_error(429, "rate_limited");
    assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    get_as(&app, &bob, "/orders/search").await.expect(200);
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_caller() {
    let idp = TestIdp::spawn().await.unwrap();
    let app = guarded(&idp).await;
    let (shop_a, shop_b) = (idp.token_for("shop-a", "orders:write"), idp.token_for("shop-b", "orders:write"));
    let body = order_body("c-1", "eu-west", &[("A", 1, "5.00")]);
    let post = |token: &str, body: &Value| {
        let auth = bearer(token);
        let app = &app;
        let body = body.clone();
        async move { app.post_json("/orders", &[("idempotency-key", "order-42"), ("authorization", &auth)], &body).await }
    };
    let first = post(&shop_a, &body).await.expect(201).json["order_id"].clone();
    // Another client with the same key: its own order, not A's replayed.
    let other = post(&shop_b, &body).await.expect(201).json["order_id"].clone();
    assert_ne!(first, other);
    // The same client again: the replay.
    let again = post(&shop_a, &body).await;
    assert_eq!((again.status.as_u16(), again.json["order_id"].clone()), (201, first));
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
}
