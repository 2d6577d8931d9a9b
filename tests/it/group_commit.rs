//! Group commit of `POST /orders` (`orchestrator::group_commit`): a group shares one
//! transaction, and every request still gets exactly the outcome it would
//! have had alone.

use order_saga::domain::NewOrder;
use order_saga::orchestrator::group_commit::{CreateRequest, Shared, create_many};
use order_saga::orchestrator::order_api::CreateOutcome;
use order_saga::store::OrderIds;

use crate::helpers::*;

fn req(key: &str, customer: &str) -> CreateRequest {
    let body = order_body(customer, "eu-west", &[("A", 1, "5.00"), ("B", 2, "1.50")]);
    CreateRequest {
        order: NewOrder::from_json(&body).unwrap(),
        key: key.into(),
        fingerprint: order_saga::store::idempotency::fingerprint(&body),
        trace: None,
        actor: None,
    }
}

fn shared(app: &TestApp) -> Shared {
    Shared { db: app.db.clone(), outbox: app.state.outbox.clone(), sagas: Some(app.sagas.clone()), actor: "api" }
}

fn created(o: &CreateOutcome) -> u64 {
    match o {
        CreateOutcome::Created { order_id, .. } => order_id.get(),
        other => panic!("expected Created, got {other:?}"),
    }
}

/// Every order row, item, saga and outbox row of `ids[i]` belongs to request `i`
/// (customer `c{i}`): the ids handed back match the rows written.
async fn assert_rows_belong_to_their_requests(app: &TestApp, ids: &[u64]) {
    for (i, id) in ids.iter().enumerate() {
        let customer: String = sqlx::query_scalar("SELECT customer_id FROM orders WHERE order_id = ?")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        assert_eq!(customer, format!("c{i}"), "order {id}");
        for sql in [
            "SELECT COUNT(*) FROM order_items WHERE order_id = ?",
            "SELECT COUNT(*) FROM saga_instances WHERE order_id = ?",
            "SELECT COUNT(*) FROM outbox WHERE aggregate_id = CAST(? AS CHAR)",
        ] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(&app.db.pool).await.unwrap();
            assert!(n >= 1, "{sql} for order {id}");
        }
        let payload: String = sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE aggregate_id = CAST(? AS CHAR) AND event_type = 'order.created.v1'",
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert!(payload.contains(&format!("\"customer_id\":\"c{i}\"")), "{payload}");
    }
}

#[tokio::test]
async fn a_group_creates_every_order_with_its_saga_key_and_response_in_one_commit() {
    let app = TestApp::new().await;
    // MariaDB's default `innodb_autoinc_lock_mode = 1`: the orders of a group in one statement.
    assert_eq!(app.db.order_ids, OrderIds::Consecutive);
    let reqs: Vec<CreateRequest> = (0..20).map(|i| req(&format!("g-{i}"), &format!("c{i}"))).collect();
    let out = create_many(&shared(&app), &reqs).await;
    let ids: Vec<u64> = out.iter().map(|o| created(o.as_ref().unwrap())).collect();
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 20);
    assert_rows_belong_to_their_requests(&app, &ids).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 20);
    assert_eq!(app.count("SELECT COUNT(*) FROM order_items").await, 40);
    assert_eq!(app.count("SELECT COUNT(*) FROM order_status_history").await, 20);
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_instances WHERE state = 'RESERVING_INVENTORY'").await, 20);
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_transitions").await, 20);
    // order.created.v1 and inventory.reserve.v1 per order.
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 40);
    // Each request's key holds its own order and response: a retry replays it.
    for (i, id) in ids.iter().enumerate() {
        let again = app
            .create_order(
                &format!("g-{i}"),
                &order_body(&format!("c{i}"), "eu-west", &[("A", 1, "5.00"), ("B", 2, "1.50")]),
            )
            .await;
        again.expect(201);
        assert_eq!(again.json["order_id"].as_u64(), Some(*id), "key g-{i}");
        assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
        assert_eq!(again.json["customer_id"], format!("c{i}"));
    }
}

#[tokio::test]
async fn where_ids_may_interleave_each_order_is_inserted_alone_with_the_same_result() {
    let app = TestApp::new().await;
    // As on MySQL 8 (`innodb_autoinc_lock_mode = 2`) or Galera.
    let mut s = shared(&app);
    s.db.order_ids = OrderIds::PerRow;
    let reqs: Vec<CreateRequest> = (0..5).map(|i| req(&format!("p-{i}"), &format!("c{i}"))).collect();
    let out = create_many(&s, &reqs).await;
    let ids: Vec<u64> = out.iter().map(|o| created(o.as_ref().unwrap())).collect();
    assert_rows_belong_to_their_requests(&app, &ids).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 5);
}

#[tokio::test]
async fn groups_committing_at_once_each_get_their_own_ids() {
    let app = TestApp::new().await;
    let s = shared(&app);
    // Eight groups of eight racing for auto-increment ids.
    let mut tasks = Vec::new();
    for g in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let reqs: Vec<CreateRequest> = (0..8).map(|i| req(&format!("r{g}-{i}"), &format!("c{i}"))).collect();
            let out = create_many(&s, &reqs).await;
            out.iter().map(|o| created(o.as_ref().unwrap())).collect::<Vec<u64>>()
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let ids = t.await.unwrap();
        assert_rows_belong_to_their_requests(&app, &ids).await;
        all.extend(ids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 64);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 64);
}

#[tokio::test]
async fn a_used_key_in_the_group_gets_its_own_outcome_and_the_others_are_created() {
    let app = TestApp::new().await;
    let first = create_many(&shared(&app), &[req("used", "c-used")]).await;
    let used_id = created(first[0].as_ref().unwrap());
    let reqs = vec![req("n1", "c1"), req("used", "c-used"), req("n2", "c2"), req("used-differently", "x")];
    // A key reused with another body.
    let seed = create_many(&shared(&app), &[req("used-differently", "original")]).await;
    created(seed[0].as_ref().unwrap());
    let out = create_many(&shared(&app), &reqs).await;
    created(out[0].as_ref().unwrap());
    match out[1].as_ref().unwrap() {
        CreateOutcome::Replayed { status: 201, body } => {
            assert!(body.contains(&format!("\"order_id\":{used_id}")), "{body}")
        }
        other => panic!("expected the stored response, got {other:?}"),
    }
    created(out[2].as_ref().unwrap());
    assert_eq!(out[3].as_ref().unwrap(), &CreateOutcome::KeyReused);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 4, "used + used-differently + n1 + n2");
    assert_eq!(app.count("SELECT COUNT(*) FROM saga_instances").await, 4);
}

#[tokio::test]
async fn twins_in_one_group_create_one_order() {
    let app = TestApp::new().await;
    let out = create_many(&shared(&app), &[req("twin", "c"), req("other", "d"), req("twin", "c")]).await;
    let id = created(out[0].as_ref().unwrap());
    created(out[1].as_ref().unwrap());
    match out[2].as_ref().unwrap() {
        CreateOutcome::Replayed { body, .. } => assert!(body.contains(&format!("\"order_id\":{id}"))),
        other => panic!("the twin replays the first, got {other:?}"),
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 2);
}

#[tokio::test]
async fn concurrent_http_creates_each_get_their_answer() {
    let app = TestApp::new().await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let router = app.router.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let body = order_body(&format!("c{i}"), "eu-west", &[("A", 1, "5.00")]).to_string();
            let req = axum::http::Request::post("/orders")
                .header("content-type", "application/json")
                .header("idempotency-key", format!("k-{i}"))
                .body(axum::body::Body::from(body))
                .unwrap();
            router.oneshot(req).await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 64);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys WHERE response_status = 201").await, 64);
}
