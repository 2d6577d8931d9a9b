//! Runs the real `order-saga` binary against the test database, broker and an
//! in-process schema-registry stand-in; plays participants; reads topics.

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use order_saga::codec::Codec;
use order_saga::config::Topics;
use order_saga::contracts::{Message, MessageKind};
use order_saga::kafka::producer::Producer;
use order_saga::kafka::{ClientSettings, admin};
use order_saga::store::Db;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::helpers::*;

pub const PARTITIONS: i32 = 3;

/// Everything one Kafka test needs: its own database, topics, group and registry.
pub struct SagaEnv {
    pub db: Db,
    pub db_url: String,
    pub registry_url: String,
    pub brokers: String,
    pub prefix: String,
    pub group: String,
    pub topics: Topics,
    pub codec: Codec,
    pub producer: Producer,
    pub client: ClientSettings,
    _registry: order_saga::devtools::registry::DevRegistry,
}

impl SagaEnv {
    pub async fn new() -> SagaEnv {
        SagaEnv::with_brokers(brokers()).await
    }

    pub async fn with_brokers(brokers: String) -> SagaEnv {
        SagaEnv::build(brokers, PARTITIONS).await
    }

    /// With topics of `partitions` partitions (regional partitioning tests).
    pub async fn with_partitions(partitions: i32) -> SagaEnv {
        SagaEnv::build(brokers(), partitions).await
    }

    async fn build(brokers: String, partitions: i32) -> SagaEnv {
        let (db, db_url) = fresh_db().await;
        let (registry_url, registry) = order_saga::devtools::registry::spawn_local().await.unwrap();
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("t{}.", &tag[..12]);
        let topics = Topics::with_prefix(&prefix);
        let client = ClientSettings::plaintext(&brokers);
        admin::create_topics(&client, &topics.all(), partitions, 1).await.expect("create test topics");
        let codec = Codec::new(&registry_url, Duration::from_secs(5)).unwrap();
        // The participants own their subjects; the daemon registers its own.
        for &k in MessageKind::ALL.iter().filter(|k| k.direction() == order_saga::contracts::Direction::In) {
            codec.register(k, topics.of(k)).await.unwrap();
        }
        let producer = Producer::new(&client, Duration::from_secs(30)).unwrap();
        SagaEnv {
            db,
            db_url,
            registry_url,
            brokers,
            group: format!("g-{}", &tag[..12]),
            prefix,
            topics,
            codec,
            producer,
            client,
            _registry: registry,
        }
    }

    /// Creates this test's topics (again, e.g. on a restarted memory broker).
    pub async fn create_topics(&self) {
        admin::create_topics(&self.client, &self.topics.all(), PARTITIONS, 1).await.expect("create test topics");
    }

    /// Environment of a daemon for this test (nothing inherited from the
    /// shell). It listens on a port the kernel picks: [`Daemon::spawn`] reads
    /// which from its log, so no other process can take it in between.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("ORDER_SAGA_DATABASE_URL", self.db_url.as_str()),
            ("ORDER_SAGA_KAFKA_BROKERS", self.brokers.as_str()),
            ("ORDER_SAGA_SCHEMA_REGISTRY_URL", self.registry_url.as_str()),
            ("ORDER_SAGA_KAFKA_TOPIC_PREFIX", self.prefix.as_str()),
            ("ORDER_SAGA_KAFKA_GROUP_ID", self.group.as_str()),
            ("ORDER_SAGA_KAFKA_SESSION_TIMEOUT", "6s"),
            ("ORDER_SAGA_KAFKA_FETCH_WAIT_MAX", "20ms"),
            ("ORDER_SAGA_OUTBOX_POLL_INTERVAL", "50ms"),
            ("ORDER_SAGA_OUTBOX_LEASE_TTL", "3s"),
            ("ORDER_SAGA_OUTBOX_SHARDS", "8"),
            ("ORDER_SAGA_SHUTDOWN_GRACE", "15s"),
            ("ORDER_SAGA_LOG_FORMAT", "text"),
            ("ORDER_SAGA_LOG", "info,order_saga=debug"),
            ("ORDER_SAGA_OPS_TOKEN", OPS_TOKEN),
            ("ORDER_SAGA_SAGAS_DIR", "sagas"),
            ("ORDER_SAGA_DATABASE_MAX_CONNECTIONS", "8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.push(("ORDER_SAGA_HTTP_ADDR".into(), "127.0.0.1:0".into()));
        env
    }

    pub async fn start_daemon(&self, extra: &[(&str, &str)]) -> Daemon {
        let mut env: HashMap<String, String> = self.daemon_env().into_iter().collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        Daemon::spawn(env).await
    }

    /// Publishes a participant event (key = order id, standard headers).
    pub async fn publish(&self, msg: &Message) {
        order_saga::devtools::simulator::publish(&self.producer, &self.codec, &self.topics, msg, &[]).await.unwrap();
    }

    /// Publishes raw bytes (for poison tests).
    pub async fn publish_raw(&self, kind: MessageKind, key: &str, payload: &[u8], headers: &[(String, String)]) {
        self.producer.enqueue(self.topics.of(kind), key.as_bytes(), payload, headers).await.unwrap().await.unwrap();
    }

    /// An in-process simulator playing inventory and payment.
    pub async fn simulator(&self, args: order_saga::devtools::simulator::SimulateArgs) -> Sim {
        let sim = Arc::new(
            order_saga::devtools::simulator::Simulator::new(
                args,
                self.codec.clone(),
                self.topics.clone(),
                &self.client,
            )
            .unwrap(),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let (s2, c2, st) = (sim.clone(), self.client.clone(), stop.clone());
        let task = tokio::spawn(async move { s2.run(&c2, st).await });
        Sim { sim, stop, task: Some(task) }
    }

    /// Every message on a topic so far, decoded (payload `None` when undecodable).
    pub async fn read_topic(&self, kind_or_dlq: Option<MessageKind>) -> Vec<Record> {
        let topic = kind_or_dlq.map(|k| self.topics.of(k).to_owned()).unwrap_or_else(|| self.topics.dlq.clone());
        let raw = read_all(&self.client, &topic);
        let mut out = Vec::new();
        for r in raw {
            let msg = match kind_or_dlq {
                Some(k) => self.codec.decode(k, r.payload.as_deref()).await.ok(),
                None => None,
            };
            out.push(Record { msg, ..r });
        }
        out
    }

    pub async fn saga_state(&self, order_id: u64) -> Option<String> {
        sqlx::query_scalar("SELECT state FROM saga_instances WHERE order_id = ?")
            .bind(order_id)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn order_status(&self, order_id: u64) -> String {
        sqlx::query_scalar("SELECT CAST(status AS CHAR) FROM orders WHERE order_id = ?")
            .bind(order_id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn wait_state(&self, order_id: u64, state: &str, timeout: Duration) {
        eventually(timeout, &format!("saga {order_id} in {state}"), || async {
            self.saga_state(order_id).await.as_deref() == Some(state)
        })
        .await;
    }

    /// Waits until the relay published every outbox row.
    pub async fn wait_outbox_drained(&self, timeout: Duration) {
        eventually(timeout, "outbox fully published", || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.db.pool)
                .await
                .unwrap()
                == 0
        })
        .await;
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.db.pool).await.unwrap()
    }

    pub async fn count_for(&self, sql: &'static str, order_id: u64) -> i64 {
        sqlx::query_scalar::<_, i64>(sql).bind(order_id).fetch_one(&self.db.pool).await.unwrap()
    }
}

pub struct Sim {
    pub sim: Arc<order_saga::devtools::simulator::Simulator>,
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub fn sim_args() -> order_saga::devtools::simulator::SimulateArgs {
    order_saga::devtools::simulator::SimulateArgs {
        reservation_failure_rate: 0.0,
        payment_failure_rate: 0.0,
        payment_silence_rate: 0.0,
        inventory_delay: Duration::ZERO,
        payment_delay: Duration::ZERO,
        duplicate_rate: 0.0,
        duplicate_delay: Duration::ZERO,
        group_id: format!("sim-{}", uuid::Uuid::new_v4().simple()),
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: HashMap<String, String>,
    pub payload: Option<Vec<u8>>,
    pub msg: Option<Message>,
}

/// Reads a topic from the beginning to its current end, without a consumer group.
///
/// tansu 0.6.0 under-reports the high watermark when one produce request
/// carried several records (it counts batches), so after reaching the
/// reported end the reader keeps polling until the topic has been quiet for
/// a moment.
pub fn read_all(client: &ClientSettings, topic: &str) -> Vec<Record> {
    let mut c = client.client_config();
    c.set("group.id", format!("reader-{}", uuid::Uuid::new_v4().simple()));
    c.set("enable.auto.commit", "false");
    c.set("fetch.wait.max.ms", "20");
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = md.topics().iter().find(|t| t.name() == topic).map_or(PARTITIONS, |t| t.partitions().len() as i32);
    for p in 0..partitions {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        ends.insert(p, hi);
        tpl.add_partition_offset(topic, p, Offset::Offset(lo)).unwrap();
    }
    let mut out = Vec::new();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut quiet_since = std::time::Instant::now();
    loop {
        assert!(std::time::Instant::now() < deadline, "reading {topic} timed out");
        let reached = ends.iter().all(|(p, hi)| next.get(p).copied().unwrap_or(0) >= *hi);
        if reached && quiet_since.elapsed() > Duration::from_millis(300) {
            break;
        }
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else { continue };
        quiet_since = std::time::Instant::now();
        let p = m.partition();
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for x in h.iter() {
                if let Some(v) = x.value {
                    headers.insert(x.key.to_owned(), String::from_utf8_lossy(v).into_owned());
                }
            }
        }
        next.insert(p, m.offset() + 1);
        out.push(Record {
            partition: p,
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            payload: m.payload().map(<[u8]>::to_vec),
            msg: None,
        });
    }
    out
}

/// A port for a process that cannot be handed one it already holds (the
/// broker, the OpenID provider): free when this returns, so another process
/// could take it before the caller's does. Daemons never need it (they listen
/// on port 0 and say where), nor do addresses meant to refuse ([`refusing_addr`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An address that refuses connections for as long as the returned socket
/// lives: bound, never listening, so no other process can take its port.
pub fn refusing_addr() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    (socket, addr)
}

/// The address after `key=` on the first log line that contains `line`
/// (the text log format, its colours removed, or the JSON one).
fn logged_addr(log: &str, line: &str, key: &str) -> Option<String> {
    let plain: String = {
        let mut out = String::with_capacity(log.len());
        let mut chars = log.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // An SGR sequence: ESC [ … m.
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let at = plain.lines().find(|l| l.contains(line))?;
    // The JSON log format (`ORDER_SAGA_LOG_FORMAT=json`) has the field as a key.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(at) {
        return v[key].as_str().map(str::to_owned);
    }
    let value = at.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    Some(value.to_owned())
}

/// A daemon process. Dropping it SIGKILLs it (never a graceful group leave,
/// which tansu 0.6.0 mishandles for multi-member groups).
pub struct Daemon {
    pub child: Option<Child>,
    pub base: String,
    /// The ops listener's base URL, when `ORDER_SAGA_OPS_ADDR` gave it one.
    pub ops_base: Option<String>,
    pub log: std::path::PathBuf,
    pub http: reqwest::Client,
}

impl Daemon {
    /// Starts `order-saga serve` and waits until it is ready; its base URL is
    /// where it says it listens (its log's "order-saga serving" line).
    pub async fn spawn(env: HashMap<String, String>) -> Daemon {
        let log = std::env::temp_dir().join(format!("order-saga-daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).unwrap();
        let wants_ops = env.contains_key("ORDER_SAGA_OPS_ADDR");
        let child = Command::new(env!("CARGO_BIN_EXE_order-saga"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn order-saga");
        // Owned by a `Daemon` from here on: if it never says where it listens,
        // the panic drops it, which kills it and prints its log.
        let mut d =
            Daemon { child: Some(child), base: String::new(), ops_base: None, log, http: reqwest::Client::new() };
        let log = d.log.clone();
        let addrs = || {
            let logs = std::fs::read_to_string(&log).unwrap_or_default();
            let base = logged_addr(&logs, "order-saga serving", "addr")?;
            let ops = logged_addr(&logs, "on their own listener", "addr");
            if wants_ops && ops.is_none() {
                return None;
            }
            Some((format!("http://{base}"), ops.map(|a| format!("http://{a}"))))
        };
        eventually(Duration::from_secs(60), &format!("daemon listening (log: {})", log.display()), || {
            let found = addrs().is_some();
            async move { found }
        })
        .await;
        (d.base, d.ops_base) = addrs().unwrap_or_default();
        d.wait_ready().await;
        d
    }

    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.base);
        let http = self.http.clone();
        let log = self.log.clone();
        eventually(Duration::from_secs(60), &format!("daemon ready (log: {})", log.display()), || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn create_order(&self, body: &Value) -> u64 {
        let r = self
            .http
            .post(format!("{}/orders", self.base))
            .header("idempotency-key", key())
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "create failed: {}", r.text().await.unwrap_or_default());
        r.json::<Value>().await.unwrap()["order_id"].as_u64().unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap()
    }

    /// SIGKILL, and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself (e.g. a failpoint abort).
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || child.wait().unwrap()))
            .await
            .expect("daemon did not exit")
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- daemon log {} ----\n{}", self.log.display(), self.logs());
        }
    }
}
