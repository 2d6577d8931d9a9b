//! Test environment: real MariaDB and a real Kafka-compatible broker, chosen by
//! environment variables that `scripts/dev test` and `.ci/run` set:
//!
//! * `ORDER_SAGA_TEST_DATABASE_URL` — server URL without a database
//!   (`mysql://user:pass@127.0.0.1:3306`); every test gets its own database.
//! * `ORDER_SAGA_TEST_KAFKA_BROKERS` — bootstrap servers; every test gets its
//!   own topic prefix and consumer group.
//! * `ORDER_SAGA_TEST_TANSU_BIN` — the tansu binary, for tests that run their own broker.
//!
//! Without them, and with the `containers` feature and a Docker engine,
//! testcontainers starts MySQL 8 and Kafka. With neither, tests fail loudly.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use order_saga::contracts::{Message, MessageKind};
use order_saga::domain::OrderId;
use order_saga::http::AppState;
use order_saga::orchestrator::{Inbound, LockMode, SagaStore};
use order_saga::saga::{Catalog, Event, EventBody};
use order_saga::store::Db;
use serde_json::Value;
use tower::ServiceExt;

pub struct Env {
    pub db_base: String,
    pub brokers: Option<String>,
    pub tansu_bin: Option<String>,
}

const HOW_TO: &str = "integration tests need MariaDB/MySQL and a Kafka-compatible broker: run them with `scripts/dev test` \
(which starts both and sets ORDER_SAGA_TEST_DATABASE_URL and ORDER_SAGA_TEST_KAFKA_BROKERS), or build with \
`--features containers` on a machine with a Docker engine";

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let db = std::env::var("ORDER_SAGA_TEST_DATABASE_URL").ok().filter(|s| !s.is_empty());
        let brokers = std::env::var("ORDER_SAGA_TEST_KAFKA_BROKERS").ok().filter(|s| !s.is_empty());
        let tansu_bin = std::env::var("ORDER_SAGA_TEST_TANSU_BIN").ok().filter(|s| !s.is_empty());
        match db {
            Some(db_base) => Env { db_base: db_base.trim_end_matches('/').to_owned(), brokers, tansu_bin },
            None => containers::start().unwrap_or_else(|| panic!("{HOW_TO}")),
        }
    })
}

pub fn brokers() -> String {
    env().brokers.clone().unwrap_or_else(|| panic!("ORDER_SAGA_TEST_KAFKA_BROKERS is not set: {HOW_TO}"))
}

#[cfg(feature = "containers")]
mod containers {
    use testcontainers_modules::kafka::apache::Kafka;
    use testcontainers_modules::mysql::Mysql;
    use testcontainers_modules::testcontainers::runners::SyncRunner;

    /// Starts MySQL 8 and Kafka once per test process; they live until the process exits.
    pub fn start() -> Option<super::Env> {
        let mysql = Mysql::default().start().ok()?;
        let kafka = Kafka::default().start().ok()?;
        let db_port = mysql.get_host_port_ipv4(3306).ok()?;
        let kafka_port = kafka.get_host_port_ipv4(testcontainers_modules::kafka::apache::KAFKA_PORT).ok()?;
        let env = super::Env {
            db_base: format!("mysql://root@127.0.0.1:{db_port}"),
            brokers: Some(format!("127.0.0.1:{kafka_port}")),
            tansu_bin: None,
        };
        // Keep the containers for the life of the process.
        std::mem::forget(mysql);
        std::mem::forget(kafka);
        Some(env)
    }
}

#[cfg(not(feature = "containers"))]
mod containers {
    pub fn start() -> Option<super::Env> {
        None
    }
}

/// A fresh, migrated database for one test.
pub async fn fresh_db() -> (Db, String) {
    let name = format!("order_saga_t_{}", uuid::Uuid::new_v4().simple());
    let admin =
        Db::connect(&env().db_base, 2, Duration::from_secs(10)).await.expect("connect to the test database server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&admin.pool)
        .await
        .expect("create test database");
    admin.pool.close().await;
    let url = format!("{}/{name}", env().db_base);
    let db = Db::connect(&url, 8, Duration::from_secs(10)).await.expect("connect to the test database");
    db.migrate().await.expect("migrate");
    (db, url)
}

pub fn catalog() -> Arc<Catalog> {
    Arc::new(
        order_saga::saga_files::load_catalog(std::path::Path::new("sagas"), &Default::default())
            .expect("sagas/ is valid"),
    )
}

/// The HTTP app in-process (no Kafka needed: the outbox is only written).
pub struct TestApp {
    pub router: Router,
    pub db: Db,
    pub state: AppState,
    pub sagas: SagaStore,
}

pub const OPS_TOKEN: &str = "test-ops-token-0123456789";

/// The daemon's configuration as it parses its flags (and the environment),
/// for an app in-process: the test ops token, timers judged by processing
/// time (no consumer reports watermarks here), 4 outbox shards, groups of up
/// to 32 creates; `extra` flags on top.
pub fn test_config(extra: &[&str]) -> order_saga::config::Config {
    use clap::Parser as _;
    let mut args = vec![
        "order-saga",
        "--ops-token",
        OPS_TOKEN,
        "--ops-bulk-rate",
        "1000",
        "--timer-event-time",
        "false",
        "--outbox-shards",
        "4",
        "--order-group-commit-max",
        "32",
    ];
    args.extend_from_slice(extra);
    args.push("serve");
    order_saga::cli::Cli::try_parse_from(args).unwrap_or_else(|e| panic!("test flags: {e}")).config
}

impl TestApp {
    /// With sagas (as the daemon runs).
    pub async fn new() -> TestApp {
        TestApp::build(true, &[]).await
    }

    /// With sagas, and these flags on top of [`test_config`]'s.
    pub async fn with_flags(extra: &[&str]) -> TestApp {
        TestApp::build(true, extra).await
    }

    /// Without sagas: the order system of record alone.
    pub async fn without_sagas() -> TestApp {
        TestApp::build(false, &[]).await
    }

    /// Through the daemon's own wiring (`app::services`) over a fresh database.
    async fn build(with_sagas: bool, extra: &[&str]) -> TestApp {
        let (db, _) = fresh_db().await;
        let cfg = test_config(extra);
        let services = order_saga::app::services(&cfg, db.clone(), catalog()).expect("the test configuration wires");
        let (mut state, sagas) = (services.state, services.sagas);
        if !with_sagas {
            // The order table on its own: no saga starts with an order.
            state.sagas = None;
            state.orders = order_saga::orchestrator::group_commit::CreateBatcher::spawn(
                order_saga::orchestrator::group_commit::Shared {
                    db: db.clone(),
                    outbox: state.outbox.clone(),
                    sagas: None,
                    actor: "api",
                },
                cfg.http.order_group_commit_max,
                cfg.http.order_group_commit_in_flight,
                |_| {},
            );
        }
        TestApp { router: order_saga::http::router(state.clone()), db, state, sagas }
    }

    pub async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, headers, json, raw: bytes.to_vec() }
    }

    pub async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.call(Method::POST, path, &h, Some(body.to_string().into_bytes())).await
    }

    pub async fn create_order(&self, key: &str, body: &Value) -> Resp {
        self.post_json("/orders", &[("idempotency-key", key)], body).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, &[], None).await
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.db.pool).await.unwrap()
    }

    /// Delivers participant events straight to the saga shell (as the consumer would).
    pub async fn deliver(&self, msgs: &[Message]) -> Vec<order_saga::orchestrator::InboundOutcome> {
        let inbound: Vec<Inbound> = msgs.iter().map(inbound_of).collect();
        self.sagas.apply_batch(&self.db, &inbound, LockMode::Wait).await.unwrap().outcomes
    }
}

/// The order id `n` (a test's ids come from JSON answers and wire messages as numbers).
pub fn oid<N: TryInto<OrderId>>(n: N) -> OrderId
where
    N::Error: std::fmt::Debug,
{
    n.try_into().expect("an order id")
}

pub fn inbound_of(m: &Message) -> Inbound {
    Inbound {
        event_id: m.event_id().to_owned(),
        order_id: Some(oid(m.order_id())),
        event_name: m.kind().name().to_owned(),
        event: Ok(Event {
            id: m.event_id().to_owned(),
            order_id: oid(m.order_id()),
            body: EventBody::Message(m.clone()),
        }),
        source: order_saga::orchestrator::Source::Kafka { topic: "test".into(), partition: 0, offset: 0 },
        trace: None,
        raw: None,
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.raw));
        self
    }

    /// Every error has the one shape.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.code(), code, "body: {}", self.json);
        assert!(
            self.json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.json
        );
        assert!(self.json["error"].get("details").is_some(), "error without details: {}", self.json);
        self
    }
}

pub fn order_body(customer: &str, region: &str, items: &[(&str, u32, &str)]) -> Value {
    serde_json::json!({
        "customer_id": customer,
        "tenant_region": region,
        "currency": "EUR",
        "items": items.iter().map(|(sku, qty, price)| serde_json::json!({"sku": sku, "qty": qty, "unit_price": price})).collect::<Vec<_>>(),
    })
}

pub fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Waits for `cond` to hold, polling; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Outbox rows of one kind for an order.
pub async fn outbox_of(db: &Db, order_id: impl std::fmt::Display, kind: MessageKind) -> Vec<Value> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE aggregate_id = ? AND event_type = ? ORDER BY id")
            .bind(order_id.to_string())
            .bind(kind.name())
            .fetch_all(&db.pool)
            .await
            .unwrap();
    rows.iter().map(|r| serde_json::from_str(r).unwrap()).collect()
}

/// An order of one item at 5.00 EUR, its saga started (RESERVING_INVENTORY).
pub async fn order(app: &TestApp) -> i64 {
    let r = app.create_order(&key(), &order_body("c", "eu-west", &[("A", 1, "5.00")])).await;
    r.expect(201);
    r.json["order_id"].as_i64().unwrap()
}

/// The inventory service reserved order `id` (no command id: its first reservation).
pub fn reserved(id: i64) -> Message {
    Message::from(order_saga::contracts::InventoryReserved {
        event_id: format!("res-{id}"),
        order_id: id,
        occurred_at: order_saga::contracts::TimestampMicros::from_datetime(chrono::Utc::now()),
        tenant_region: "eu-west".into(),
        command_id: None,
    })
}

/// The inventory service could not reserve order `id` (one item short): its saga goes to PENDING_REVIEW.
pub fn out_of_stock(id: i64) -> Message {
    Message::from(order_saga::contracts::InventoryReservationFailed {
        event_id: format!("rf-{id}"),
        order_id: id,
        occurred_at: order_saga::contracts::TimestampMicros::from_datetime(chrono::Utc::now()),
        tenant_region: "eu-west".into(),
        command_id: None,
        reason: "OUT_OF_STOCK".into(),
        shortages: vec![order_saga::contracts::Shortage { sku: "A".into(), requested_qty: 1, available_qty: 0 }],
    })
}
