//! The outbox relay's transports: Kafka through a broker outage, and REST.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::post;
use order_saga::contracts::MessageKind;
use serde_json::Value;

use crate::daemon::*;
use crate::helpers::*;

const T: Duration = Duration::from_secs(90);

/// A tansu broker of our own, on memory storage: killing it is a broker
/// outage for the daemon, and a restart comes back empty (the test re-creates
/// the topics, as an operator would after losing a single-node cluster). That
/// is harsher than a durable broker's restart — the relay must not rely on the
/// broker remembering its producer id — and runs with the prebuilt broker
/// (memory storage only) that `scripts/dev` fetches.
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Broker {
    fn start(port: u16, dir: &std::path::Path) -> Broker {
        let bin = env().tansu_bin.clone().expect("ORDER_SAGA_TEST_TANSU_BIN is not set (scripts/dev test sets it)");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().create(true).append(true).open(dir.join("tansu.log")).unwrap(),
            ))
            .spawn()
            .expect("start tansu");
        Broker { child: Some(child), port, dir: dir.to_path_buf() }
    }

    async fn wait_up(&self) {
        let port = self.port;
        eventually(Duration::from_secs(30), "broker listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- tansu log ----\n{}",
                std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn pending_with_attempts(env: &SagaEnv) -> i64 {
    env.count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND attempts > 0").await
}

#[tokio::test]
async fn the_relay_rides_out_a_broker_outage_and_catches_up() {
    let dir = std::env::temp_dir().join(format!("tansu-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut broker = Broker::start(port, &dir);
    broker.wait_up().await;
    let env = SagaEnv::with_brokers(format!("127.0.0.1:{port}")).await;
    let d = env.start_daemon(&[("ORDER_SAGA_KAFKA_DELIVERY_TIMEOUT", "2s")]).await;
    let first = d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await;
    env.wait_outbox_drained(T).await;

    broker.kill();
    // The daemon keeps taking orders; their rows wait in the outbox.
    let during: Vec<u64> = vec![
        d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await,
        d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await,
    ];
    // Long enough for the relay to give up on its producer and make a new one
    // (tansu 0.6.0's sqlite storage would panic on the old producer id after
    // a restart; Apache Kafka would not, and a fresh producer is safe with both).
    eventually(T, "publishing fails while the broker is down", || async {
        env.count("SELECT CAST(COALESCE(MAX(attempts), 0) AS SIGNED) FROM outbox WHERE published_at IS NULL").await >= 3
            && pending_with_attempts(&env).await > 0
    })
    .await;
    d.http
        .get(format!("{}/readyz", d.base))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("still ready: the database is up");

    let restarted = Broker::start(port, &dir);
    restarted.wait_up().await;
    env.create_topics().await;
    env.wait_outbox_drained(T).await;
    let created: std::collections::HashSet<i64> = env
        .read_topic(Some(MessageKind::OrderCreated))
        .await
        .iter()
        .filter_map(|r| r.msg.as_ref().map(|m| m.order_id()))
        .collect();
    // The restarted memory broker lost what was published before the outage;
    // every order taken during it reaches the new broker, exactly once.
    for id in &during {
        assert!(created.contains(&(*id as i64)), "order {id} was published after the outage");
    }
    assert!(!created.contains(&(first as i64)), "published before the outage, not again: {created:?}");
    assert_eq!(created.len(), during.len(), "each order once: {created:?}");
    drop(d);
    drop(restarted);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(String, String, Value)>>>);

async fn capture(State(c): State<Captured>, uri: Uri, headers: HeaderMap, body: String) -> &'static str {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    c.0.lock().unwrap().push((uri.path().to_owned(), key, serde_json::from_str(&body).unwrap_or(Value::Null)));
    "ok"
}

async fn participant_server() -> (String, Captured) {
    let c = Captured::default();
    let app = Router::new()
        .route("/inventory/reserve", post(capture))
        .route("/inventory/release", post(capture))
        .route("/payments/intents", post(capture))
        .route("/payments/intents/void", post(capture))
        .with_state(c.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, c)
}

#[tokio::test]
async fn commands_can_travel_over_rest_from_the_outbox() {
    let env = SagaEnv::new().await;
    let (url, captured) = participant_server().await;
    let d = env
        .start_daemon(&[
            ("ORDER_SAGA_REST_MODE", "always"),
            ("ORDER_SAGA_REST_INVENTORY_URL", &url),
            ("ORDER_SAGA_REST_PAYMENT_URL", &url),
        ])
        .await;
    let id = d.create_order(&order_body("c", "eu", &[("A", 2, "1.00")])).await;
    env.wait_outbox_drained(T).await;
    let got = captured.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (path, key, body) = &got[0];
    assert_eq!(path, "/inventory/reserve");
    assert_eq!(key, &format!("{id}:reserve_inventory:reserve:1"), "Idempotency-Key = command id");
    assert_eq!(body["items"][0]["qty"], 2);
    assert!(env.read_topic(Some(MessageKind::InventoryReserve)).await.is_empty(), "commands went over REST");
    assert_eq!(env.read_topic(Some(MessageKind::OrderCreated)).await.len(), 1, "events stay on Kafka");
    assert!(d.metrics().await.contains("outbox_published_total{transport=\"rest\"} 1"));
}

#[tokio::test]
async fn commands_fall_back_to_rest_when_kafka_is_unavailable() {
    let env = SagaEnv::new().await;
    let (url, captured) = participant_server().await;
    let (_refusing, dead) = refusing_addr();
    let d = env
        .start_daemon(&[
            ("ORDER_SAGA_KAFKA_BROKERS", &dead),
            ("ORDER_SAGA_KAFKA_DELIVERY_TIMEOUT", "1s"),
            ("ORDER_SAGA_REST_MODE", "fallback"),
            ("ORDER_SAGA_REST_FALLBACK_AFTER", "1s"),
            ("ORDER_SAGA_REST_INVENTORY_URL", &url),
            ("ORDER_SAGA_REST_PAYMENT_URL", &url),
        ])
        .await;
    let id = d.create_order(&order_body("c", "eu", &[("A", 1, "1.00")])).await;
    let c2 = captured.clone();
    eventually(T, "reserve command delivered over REST", move || {
        let c = c2.clone();
        async move { c.0.lock().unwrap().iter().any(|(p, _, _)| p == "/inventory/reserve") }
    })
    .await;
    eventually(T, "the command's row marked published", || async {
        env.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'inventory.reserve.v1' AND published_at IS NOT NULL")
            .await
            == 1
    })
    .await;
    // The event has no REST route: it waits for Kafka.
    let waiting: i64 =
        env.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'order.created.v1' AND published_at IS NULL").await;
    assert_eq!(waiting, 1);
    assert_eq!(captured.0.lock().unwrap()[0].1, format!("{id}:reserve_inventory:reserve:1"));
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Vec<u8>>>>);

async fn collect_spans(State(s): State<Spans>, body: axum::body::Bytes) -> &'static str {
    s.0.lock().unwrap().push(body.to_vec());
    ""
}

#[tokio::test]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_configured() {
    let env = SagaEnv::new().await;
    let spans = Spans::default();
    let app = Router::new().route("/v1/traces", post(collect_spans)).with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let d = env.start_daemon(&[("ORDER_SAGA_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "200")]).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = d
        .http
        .post(format!("{}/orders", d.base))
        .header("idempotency-key", key())
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&order_body("c", "eu", &[("A", 1, "1.00")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let raw_id = hex::decode(trace_id).unwrap();
    let s2 = spans.clone();
    eventually(T, "the request's span exported with the caller's trace id", move || {
        let s = s2.clone();
        let raw_id = raw_id.clone();
        async move { s.0.lock().unwrap().iter().any(|body| body.windows(16).any(|w| w == raw_id.as_slice())) }
    })
    .await;
}
