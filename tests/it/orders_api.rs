//! The orders HTTP API against the real database (issue: foundation).

use axum::http::Method;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn create_returns_the_full_order_and_writes_everything_in_one_transaction() {
    let app = TestApp::new().await;
    let body = order_body("cust-1", "eu-west", &[("SKU-1", 2, "19.99"), ("SKU-2", 1, "5")]);
    let r = app.create_order("key-1", &body).await;
    r.expect(201);
    let o = &r.json;
    let id = o["order_id"].as_u64().unwrap();
    assert_eq!(r.headers["location"], format!("/orders/{id}").as_str());
    assert_eq!(o["status"], "PENDING");
    assert_eq!(o["total_amount"], "44.98");
    assert_eq!(o["currency"], "EUR");
    assert_eq!(o["version"], 1);
    assert_eq!(o["item_count"], 2);
    assert_eq!(
        o["items"][0],
        json!({"line_no": 1, "sku": "SKU-1", "qty": 2, "unit_price": "19.99", "line_total": "39.98"})
    );
    assert_eq!(o["items"][1]["unit_price"], "5.00");
    assert!(o["created_at"].is_string() && o["updated_at"] == o["created_at"]);

    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM order_items").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM order_status_history WHERE from_status IS NULL AND to_status = 'PENDING'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys WHERE response_status = 201").await, 1);
    let created = outbox_of(&app.db, id, order_saga::contracts::MessageKind::OrderCreated).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["total_amount"], "44.98");
    assert_eq!(created[0]["items"][1], json!({"sku": "SKU-2", "qty": 1, "unit_price": "5.00"}));
    // The saga started in the same transaction and asked inventory to reserve.
    let reserve = outbox_of(&app.db, id, order_saga::contracts::MessageKind::InventoryReserve).await;
    assert_eq!(reserve.len(), 1);
    assert_eq!(reserve[0]["command_id"], format!("{id}:reserve_inventory:reserve:1"));
    let headers: String = sqlx::query_scalar("SELECT headers FROM outbox WHERE event_type = 'order.created.v1'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let headers: Value = serde_json::from_str(&headers).unwrap();
    assert_eq!(headers["event_type"], "order.created.v1");
    assert!(headers["traceparent"].as_str().is_some_and(|t| t.starts_with("00-")));

    let got = app.get(&format!("/orders/{id}")).await;
    got.expect(200);
    assert_eq!(got.json, r.json, "GET returns what POST returned");
    assert_eq!(got.headers["etag"], "\"v1\"");
}

#[tokio::test]
async fn same_key_and_body_replays_the_original_response() {
    let app = TestApp::new().await;
    let body = order_body("cust-1", "eu", &[("A", 1, "1.00")]);
    let first = app.create_order("k", &body).await;
    first.expect(201);
    // Same content, different key order and whitespace: still the same request.
    let reordered = r#"{ "items": [ {"unit_price": "1.00", "qty": 1, "sku": "A"} ], "currency": "EUR", "tenant_region": "eu", "customer_id": "cust-1" }"#;
    let again = app
        .call(
            Method::POST,
            "/orders",
            &[("content-type", "application/json"), ("idempotency-key", "k")],
            Some(reordered.into()),
        )
        .await;
    again.expect(201);
    assert_eq!(again.raw, first.raw, "byte-identical original response");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // The X- form of the header names the same key.
    let x = app.post_json("/orders", &[("x-idempotency-key", "k")], &body).await;
    x.expect(201);
    assert_eq!(x.raw, first.raw);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'order.created.v1'").await, 1);
}

#[tokio::test]
async fn same_key_with_another_body_is_refused() {
    let app = TestApp::new().await;
    app.create_order("k", &order_body("c", "eu", &[("A", 1, "1.00")])).await.expect(201);
    let r = app.create_order("k", &order_body("c", "eu", &[("A", 2, "1.00")])).await;
    r.expect_error(422, "idempotency_key_reused");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1);
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_key_create_one_order() {
    let app = std::sync::Arc::new(TestApp::new().await);
    let body = order_body("c", "eu", &[("A", 3, "2.50")]);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, body) = (app.clone(), body.clone());
        tasks.push(tokio::spawn(async move { app.create_order("the-one-key", &body).await }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        r.expect(201);
        ids.insert(r.json["order_id"].as_u64().unwrap());
    }
    assert_eq!(ids.len(), 1, "every response names the same order");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_instances").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'inventory.reserve.v1'").await, 1);
}

#[tokio::test]
async fn idempotency_key_rules() {
    let app = TestApp::new().await;
    let body = order_body("c", "eu", &[("A", 1, "1.00")]);
    app.post_json("/orders", &[], &body).await.expect_error(422, "idempotency_key_missing");
    app.post_json("/orders", &[("idempotency-key", "a"), ("x-idempotency-key", "b")], &body)
        .await
        .expect_error(422, "idempotency_key_conflict");
    let long = "k".repeat(256);
    app.post_json("/orders", &[("idempotency-key", &long)], &body).await.expect_error(422, "idempotency_key_invalid");
    app.post_json("/orders", &[("idempotency-key", "has space")], &body)
        .await
        .expect_error(422, "idempotency_key_invalid");
    app.post_json("/orders", &[("idempotency-key", "a"), ("x-idempotency-key", "a")], &body).await.expect(201);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1);
}

/// Each refusal of a body before validation: its status and code, and
/// nothing written (the idempotency key stays free).
#[tokio::test]
async fn unreadable_bodies_are_refused_and_burn_nothing() {
    let app = TestApp::new().await;
    let ok = order_body("c", "eu", &[("A", 1, "1.00")]).to_string();
    let huge = format!("{{\"customer_id\": \"{}\"}}", "x".repeat(70 * 1024));
    let json = Some("application/json");
    // (case, content type, body, status, code)
    let cases = [
        ("wrong content type", Some("text/plain"), ok.clone().into(), 415, "unsupported_media_type"),
        ("no content type", None, ok.clone().into(), 415, "unsupported_media_type"),
        ("larger than the limit", json, huge.into(), 413, "payload_too_large"),
        ("not JSON", json, b"{\"a\":".to_vec(), 400, "malformed_json"),
    ];
    for (case, content_type, body, status, code) in cases {
        let mut headers = vec![("idempotency-key", "k")];
        headers.extend(content_type.map(|t| ("content-type", t)));
        let r = app.call(Method::POST, "/orders", &headers, Some(body)).await;
        assert_eq!(r.status.as_u16(), status, "{case}: {}", r.json);
        r.expect_error(status, code);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys").await, 0);
    app.call(
        Method::POST,
        "/orders",
        &[("idempotency-key", "k"), ("content-type", "application/json")],
        Some(ok.into()),
    )
    .await
    .expect(201);
}

/// Every field problem at once, with JSON pointers; nothing written.
#[tokio::test]
async fn invalid_orders_get_every_field_error_and_burn_nothing() {
    let app = TestApp::new().await;
    let ok = order_body("c", "eu", &[("A", 1, "1.00")]);
    // 422: every field problem at once, with JSON pointers.
    let r = app
        .create_order("k", &json!({"customer_id": "", "currency": "eur", "items": [{"sku": "A", "qty": 0, "unit_price": 1.5}], "extra": 1}))
        .await;
    r.expect_error(422, "validation_failed");
    let fields: Vec<(String, String)> = r.json["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap().to_owned(), f["code"].as_str().unwrap().to_owned()))
        .collect();
    for expected in [
        ("/extra", "unknown_field"),
        ("/customer_id", "too_short"),
        ("/tenant_region", "required"),
        ("/currency", "invalid_value"),
        ("/items/0/qty", "out_of_range"),
        ("/items/0/unit_price", "invalid_type"),
    ] {
        assert!(fields.contains(&(expected.0.into(), expected.1.into())), "missing {expected:?} in {fields:?}");
    }
    for bad in
        [json!([]), json!({"customer_id": "c", "tenant_region": "eu", "currency": "EUR", "items": []}), json!(null)]
    {
        app.create_order("k", &bad).await.expect_error(422, "validation_failed");
    }
    // Nothing was written, and the key is still free.
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys").await, 0);
    app.create_order("k", &ok).await.expect(201);
}

#[tokio::test]
async fn get_unknown_and_malformed_ids() {
    let app = TestApp::new().await;
    app.get("/orders/999999").await.expect_error(404, "order_not_found");
    app.get("/orders/abc").await.expect_error(404, "order_not_found");
    app.get("/orders/0").await.expect_error(404, "order_not_found");
    app.get("/orders/-1").await.expect_error(404, "order_not_found");
    app.get("/nope").await.expect_error(404, "not_found");
    app.call(Method::DELETE, "/orders/1", &[], None).await.expect_error(405, "method_not_allowed");
}

async fn create(app: &TestApp, customer: &str, region: &str) -> u64 {
    let r = app.create_order(&key(), &order_body(customer, region, &[("A", 1, "1.00")])).await;
    r.expect(201);
    r.json["order_id"].as_u64().unwrap()
}

async fn transition(app: &TestApp, id: u64, body: Value) -> Resp {
    app.post_json(&format!("/orders/{id}/status"), &[], &body).await
}

#[tokio::test]
async fn transitions_follow_the_table_and_are_recorded() {
    let app = TestApp::without_sagas().await;
    let id = create(&app, "c", "eu").await;
    let r = transition(
        &app,
        id,
        json!({"to_status": "CONFIRMED", "actor": "support:alice", "reason_code": "MANUAL", "comment": "checked"}),
    )
    .await;
    r.expect(200);
    assert_eq!((r.json["status"].as_str(), r.json["version"].as_u64()), (Some("CONFIRMED"), Some(2)));
    assert!(
        r.json["updated_at"].as_str() > r.json["created_at"].as_str() || r.json["updated_at"] == r.json["created_at"]
    );
    transition(&app, id, json!({"to_status": "FULFILLED", "actor": "wms"})).await.expect(200);
    let bad = transition(&app, id, json!({"to_status": "CANCELLED", "actor": "support:bob"})).await;
    bad.expect_error(409, "illegal_transition");
    assert_eq!(bad.json["error"]["details"]["allowed"], json!(["RETURNED"]));
    transition(&app, id, json!({"to_status": "RETURNED", "actor": "wms"})).await.expect(200);
    // Terminal: nothing leaves RETURNED.
    for to in ["PENDING", "CONFIRMED", "FULFILLED", "CANCELLED", "PENDING_REVIEW", "RETURNED"] {
        transition(&app, id, json!({"to_status": to, "actor": "x"})).await.expect_error(409, "illegal_transition");
    }
    let history: Vec<(Option<String>, String, String)> = sqlx::query_as(
        "SELECT from_status, to_status, actor FROM order_status_history WHERE order_id = ? ORDER BY history_id",
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        history,
        vec![
            (None, "PENDING".into(), "api".into()),
            (Some("PENDING".into()), "CONFIRMED".into(), "support:alice".into()),
            (Some("CONFIRMED".into()), "FULFILLED".into(), "wms".into()),
            (Some("FULFILLED".into()), "RETURNED".into(), "wms".into()),
        ]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'order.status.changed.v1'").await, 3);
    let reason: Option<String> =
        sqlx::query_scalar("SELECT reason_code FROM order_status_history WHERE to_status = 'CONFIRMED'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("MANUAL"));
}

#[tokio::test]
async fn transition_input_errors_and_versions() {
    let app = TestApp::without_sagas().await;
    let id = create(&app, "c", "eu").await;
    transition(&app, id, json!({"to_status": "DONE", "actor": "x"})).await.expect_error(422, "validation_failed");
    transition(&app, id, json!({"to_status": "CONFIRMED"})).await.expect_error(422, "validation_failed");
    transition(&app, 424242, json!({"to_status": "CONFIRMED", "actor": "x"}))
        .await
        .expect_error(404, "order_not_found");
    let stale = transition(&app, id, json!({"to_status": "CONFIRMED", "actor": "x", "expected_version": 7})).await;
    stale.expect_error(409, "version_conflict");
    assert_eq!(stale.json["error"]["details"]["current_version"], 1);
    transition(&app, id, json!({"to_status": "PENDING_REVIEW", "actor": "x", "expected_version": 1})).await.expect(200);
}

#[tokio::test]
async fn concurrent_transitions_from_one_version_let_exactly_one_win() {
    let app = std::sync::Arc::new(TestApp::without_sagas().await);
    let id = create(&app, "c", "eu").await;
    let mut tasks = Vec::new();
    for (i, to) in
        ["CONFIRMED", "CANCELLED", "PENDING_REVIEW", "CONFIRMED", "CANCELLED", "PENDING_REVIEW"].into_iter().enumerate()
    {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            transition(&app, id, json!({"to_status": to, "actor": format!("a{i}"), "expected_version": 1})).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            409 => assert!(["version_conflict", "concurrent_modification"].contains(&r.code()), "{}", r.json),
            other => panic!("unexpected {other}: {}", r.json),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM order_status_history").await, 2);
    assert_eq!(app.count("SELECT CAST(MAX(version) AS SIGNED) FROM orders").await, 2);
}

#[tokio::test]
async fn search_pages_without_gaps_or_repeats() {
    let app = TestApp::new().await;
    let mut all = Vec::new();
    for i in 0..23 {
        let region = if i % 3 == 0 { "us-east" } else { "eu-west" };
        all.push((create(&app, &format!("cust-{}", i % 4), region).await, region));
    }
    let page_through = |query: String| {
        let app = &app;
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..20 {
                let q = match &cursor {
                    Some(c) => format!("{query}&cursor={c}"),
                    None => query.clone(),
                };
                let r = app.get(&format!("/orders/search?{q}")).await;
                r.expect(200);
                for o in r.json["orders"].as_array().unwrap() {
                    assert!(o.get("items").is_none(), "search returns summaries");
                    seen.push((o["order_id"].as_u64().unwrap(), o["created_at"].as_str().unwrap().to_owned()));
                }
                match r.json["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return seen,
                }
            }
            panic!("pagination did not end");
        }
    };
    let seen = page_through("limit=5".into()).await;
    let ids: Vec<u64> = seen.iter().map(|(i, _)| *i).collect();
    let mut expected: Vec<u64> = all.iter().map(|(i, _)| *i).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, expected, "newest first, every order exactly once");
    assert!(seen.windows(2).all(|w| w[0].1 >= w[1].1), "ordered by created_at desc");

    let eu = page_through("tenant_region=eu-west&limit=4".into()).await;
    assert_eq!(eu.len(), all.iter().filter(|(_, r)| *r == "eu-west").count());
    let c1 = page_through("customer_id=cust-1&status=PENDING&limit=2".into()).await;
    assert_eq!(c1.len(), 23 / 4 + usize::from(23 % 4 > 1));

    // A window by creation time.
    let from = &seen[15].1;
    let to = &seen[5].1;
    let window = page_through(format!("created_from={from}&created_to={to}&limit=3")).await;
    assert_eq!(window.len(), 10, "[from, to) holds seen[6..=15]");
}

#[tokio::test]
async fn search_parameter_errors() {
    let app = TestApp::new().await;
    for q in [
        "limit=0",
        "limit=101",
        "limit=x",
        "status=DONE",
        "created_from=yesterday",
        "cursor=garbage",
        "colour=red",
        "limit=1&limit=2",
    ] {
        let r = app.get(&format!("/orders/search?{q}")).await;
        r.expect(422);
        assert!(
            ["invalid_parameter", "unknown_parameter", "repeated_parameter"].contains(&r.code()),
            "{q}: {}",
            r.json
        );
    }
    for _ in 0..3 {
        create(&app, "c", "eu").await;
    }
    let r = app.get("/orders/search?limit=1&tenant_region=eu").await;
    let cursor = r.json["next_cursor"].as_str().unwrap().to_owned();
    app.get(&format!("/orders/search?limit=1&tenant_region=us&cursor={cursor}"))
        .await
        .expect_error(422, "invalid_parameter");
    app.get("/orders/search?created_from=2026-01-02T00:00:00Z&created_to=2026-01-01T00:00:00Z")
        .await
        .expect_error(422, "invalid_parameter");
}

#[tokio::test]
async fn health_readiness_and_openapi() {
    let app = TestApp::new().await;
    app.get("/healthz").await.expect(200);
    let r = app.get("/readyz").await;
    r.expect(200);
    assert_eq!(r.json["status"], "ready");
    let doc = app.get("/openapi.json").await;
    doc.expect(200);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/orders",
        "/orders/{order_id}",
        "/orders/{order_id}/status",
        "/orders/search",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc.json["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
}
