//! Saga throughput and latency against the local MariaDB and tansu.
//!
//!     scripts/dev up && cargo bench --bench saga
//!
//! 1. Events applied per second by the consumer, with batching off
//!    (`consumer_batch_max = 1`) and on (200): N sagas waiting for inventory,
//!    N `inventory.reserved.v1` events already on the topic, the consumer
//!    started, time from the first to the last applied event.
//! 2. End to end: the release binary as its own process (HTTP, consumer,
//!    relay, sweeper) with the simulator answering at once; orders created
//!    over HTTP at fixed rates (open loop) and flat out (closed loop). The open
//!    loop's load comes from this process and from `benches/load.py`, a
//!    separate Python process as an outside probe would send it (`BENCH_LOAD`).
//!    Latency is create → CONFIRMED from the database's own timestamps, and
//!    split by hop (outbox commit → publish → participant → applied) to show
//!    where the time goes. Each level runs on a daemon, simulator, database
//!    and topics of its own (`BENCH_FRESH_STACK=0` shares one across levels):
//!    tansu's fetch cost grows with what a partition has ever stored, so on
//!    shared topics a level would pay for the levels before it.
//!
//! The MariaDB commit ceiling is measured in the same run.

// A benchmark: failing loudly on setup problems is the right behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod probe;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use order_saga::codec::Codec;
use order_saga::config::Topics;
use order_saga::contracts::{InventoryReserved, Message, MessageKind, TimestampMicros};
use order_saga::domain::NewOrder;
use order_saga::kafka::ClientSettings;
use order_saga::kafka::producer::Producer;
use order_saga::orchestrator::SagaStore;
use order_saga::orchestrator::order_api::CreateContext;
use order_saga::store::Db;
use order_saga::store::outbox::OutboxWriter;

const PARTITIONS: i32 = 6;

fn brokers() -> String {
    std::env::var("ORDER_SAGA_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn main() {
    // `cargo test`/nextest list and run bench targets too; only `cargo bench` (which passes --bench) measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        std::mem::forget(order_saga::telemetry::init(order_saga::config::LogFormat::Text, &filter, None, "bench"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("BENCH_EVENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(4000);
    let secs: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    println!("## Saga benchmarks\n");
    println!("### Events applied per second (consumer path, {n} events, {PARTITIONS} partitions)\n");
    println!("| batching | events/s | events per transaction (mean) |");
    println!("|---|---:|---:|");
    let batches: Vec<usize> = std::env::var("BENCH_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 200]);
    for batch in batches {
        let (rate, per_tx) = apply_rate(n, batch).await;
        println!("| consumer_batch_max = {batch} | {rate:.0} | {per_tx:.1} |");
    }
    if std::env::var("BENCH_SKIP_E2E").is_ok() {
        return;
    }
    end_to_end(Duration::from_secs(secs)).await;
    if std::env::var("BENCH_SKIP_CEILING").is_ok() {
        return;
    }
    header("MariaDB durable-commit ceiling (same run)");
    for c in [1usize, 8, 32] {
        row(c, &commit_ceiling(c, Duration::from_secs(5)).await);
    }
}

struct Env {
    db: Db,
    url: String,
    registry_url: String,
    prefix: String,
    topics: Topics,
    codec: Codec,
    client: ClientSettings,
    _registry: order_saga::devtools::registry::DevRegistry,
}

async fn env(tag: &str) -> Env {
    let (db, url) = fresh_db(tag, 40).await;
    let (registry_url, registry) = order_saga::devtools::registry::spawn_local().await.unwrap();
    let prefix = format!("b{}.", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let topics = Topics::with_prefix(&prefix);
    let client = ClientSettings::plaintext(&brokers());
    order_saga::kafka::admin::create_topics(&client, &topics.all(), PARTITIONS, 1)
        .await
        .expect("broker (scripts/dev up)");
    let codec = Codec::new(&registry_url, Duration::from_secs(5)).unwrap();
    for &k in MessageKind::ALL {
        codec.register(k, topics.of(k)).await.unwrap();
    }
    Env { db, url, registry_url, prefix, topics, codec, client, _registry: registry }
}

fn order() -> NewOrder {
    NewOrder::from_json(&serde_json::json!({
        "customer_id": "bench", "tenant_region": "eu-west", "currency": "EUR",
        "items": [{"sku": "SKU-1", "qty": 2, "unit_price": "19.99"}]
    }))
    .unwrap()
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    probe::OWN_STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    sqlx::query_scalar::<_, i64>(sql).fetch_one(&db.pool).await.unwrap()
}

/// Consumer-only throughput: returns (events/s, mean batch size).
async fn apply_rate(n: usize, batch: usize) -> (f64, f64) {
    let e = env(&format!("apply{batch}")).await;
    let outbox = OutboxWriter { topics: e.topics.clone(), shards: 16 };
    let catalog =
        Arc::new(order_saga::saga_files::load_catalog(std::path::Path::new("sagas"), &Default::default()).unwrap());
    let sagas = SagaStore::new(catalog, outbox.clone());
    // N sagas waiting for the inventory.
    let o = order();
    let ids = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(n)));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (db, outbox, sagas, o, ids) = (e.db.clone(), outbox.clone(), sagas.clone(), o.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                let ctx = CreateContext { outbox: &outbox, trace: None, saga: Some(&sagas), actor: "bench" };
                let r = order_saga::orchestrator::order_api::create(&db, &o, &format!("k{i}"), [0; 32], &ctx)
                    .await
                    .unwrap();
                if let order_saga::orchestrator::order_api::CreateOutcome::Created { order_id, .. } = r {
                    ids.lock().await.push(order_id);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Their answers, already on the topic.
    let producer = Producer::new(&e.client, Duration::from_secs(30)).unwrap();
    let topic = e.topics.of(MessageKind::InventoryReserved).to_owned();
    let mut acks = Vec::new();
    for id in ids.lock().await.iter() {
        let msg = Message::from(InventoryReserved {
            event_id: format!("res-{id}"),
            order_id: id.wire(),
            occurred_at: TimestampMicros::from_datetime(Utc::now()),
            tenant_region: "eu-west".into(),
            command_id: None,
        });
        let bytes = e.codec.encode(&msg, &topic).await.unwrap();
        let headers = vec![("event_id".to_owned(), msg.event_id().to_owned())];
        acks.push(producer.enqueue(&topic, id.to_string().as_bytes(), &bytes, &headers).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    // The consumer, alone.
    // Wired as `serve` wires it, with this bench's topics, group and batch size.
    let (group, batch_max) = (format!("bench-{}", uuid::Uuid::new_v4().simple()), batch.to_string());
    let cfg = {
        use clap::Parser as _;
        let args = [
            "order-saga",
            "--kafka-topic-prefix",
            &e.prefix,
            "--kafka-group-id",
            &group,
            "--consumer-batch-max",
            &batch_max,
            "--kafka-session-timeout",
            "10s",
            "--kafka-fetch-wait-max",
            "20ms",
            "--shutdown-grace",
            "10s",
            "serve",
        ];
        order_saga::cli::Cli::try_parse_from(args).unwrap().config
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = order_saga::telemetry::metrics::Metrics::register(&mut registry);
    let wakeup = Arc::new(order_saga::store::outbox::RelayWakeup::default());
    let handler = Arc::new(order_saga::app::event_handler(&cfg, &e.db, &sagas, &e.codec, &metrics, &wakeup).unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let consumer = order_saga::kafka::consumer::SagaConsumer::start(
        order_saga::app::consumer_settings(&cfg, &e.client).unwrap(),
        handler,
        Some(metrics.clone()),
        stop.clone(),
    )
    .unwrap();
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = count(&e.db, "SELECT COUNT(*) FROM saga_instances WHERE state = 'AWAITING_PAYMENT'").await as usize;
        if done > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if done >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    let batches = metrics.consumer.consumer_batch_size.clone();
    let _ = batches;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let get = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let per_tx = get("saga_consumer_batch_size_sum") / get("saga_consumer_batch_size_count").max(1.0);
    stop.cancel();
    let _ = consumer.join().await;
    drop_db(&e.db, &e.url).await;
    (n as f64 / secs, per_tx)
}

/// The daemon's environment for this run (nothing inherited but PATH).
fn daemon_env(e: &Env, port: u16) -> Vec<(String, String)> {
    [
        ("ORDER_SAGA_DATABASE_URL", e.url.clone()),
        ("ORDER_SAGA_KAFKA_BROKERS", brokers()),
        ("ORDER_SAGA_SCHEMA_REGISTRY_URL", e.registry_url.clone()),
        ("ORDER_SAGA_KAFKA_TOPIC_PREFIX", e.prefix.clone()),
        ("ORDER_SAGA_KAFKA_GROUP_ID", format!("bench-{}", uuid::Uuid::new_v4().simple())),
        ("ORDER_SAGA_KAFKA_FETCH_WAIT_MAX", "10ms".into()),
        ("ORDER_SAGA_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("ORDER_SAGA_DATABASE_MAX_CONNECTIONS", "40".into()),
        ("ORDER_SAGA_OUTBOX_POLL_INTERVAL", "50ms".into()),
        ("ORDER_SAGA_LOG", std::env::var("BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into())),
        ("ORDER_SAGA_MIGRATE_ON_START", "false".into()),
        // BENCH_GROUP_COMMIT_MAX=1 measures POST /orders without group commit.
        ("ORDER_SAGA_ORDER_GROUP_COMMIT_MAX", std::env::var("BENCH_GROUP_COMMIT_MAX").unwrap_or_else(|_| "8".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    // BENCH_DAEMON_ENV="ORDER_SAGA_X=1 ORDER_SAGA_Y=2": settings to try (BENCHMARKS.md).
    .chain(std::env::var("BENCH_DAEMON_ENV").unwrap_or_default().split_whitespace().filter_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        Some((k.to_owned(), v.to_owned()))
    }))
    .collect()
}

/// Runs the release binary as its own process, as in production.
/// `BENCH_BIN=/path/to/order-saga` runs another build instead (an A/B on a
/// machine whose speed drifts: alternate runs of two binaries, BENCHMARKS.md).
fn spawn(args: &[&str], env: &[(String, String)]) -> std::process::Child {
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_order-saga").to_owned());
    std::process::Command::new(bin)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn order-saga")
}

/// Per-order timestamps from the database.
#[derive(sqlx::FromRow)]
struct Timeline {
    created_at: DateTime<Utc>,
    confirmed_at: DateTime<Utc>,
    reserve_published: Option<DateTime<Utc>>,
    reserved_applied: Option<DateTime<Utc>>,
    authorize_published: Option<DateTime<Utc>>,
}

async fn timelines(db: &Db, since: DateTime<Utc>) -> Vec<Timeline> {
    sqlx::query_as(
        "SELECT o.created_at, o.updated_at AS confirmed_at, \
           (SELECT published_at FROM outbox x WHERE x.aggregate_id = CAST(o.order_id AS CHAR) AND x.event_type = 'inventory.reserve.v1' LIMIT 1) AS reserve_published, \
           (SELECT occurred_at FROM saga_transitions t WHERE t.order_id = o.order_id AND t.event_name = 'inventory.reserved.v1' LIMIT 1) AS reserved_applied, \
           (SELECT published_at FROM outbox x WHERE x.aggregate_id = CAST(o.order_id AS CHAR) AND x.event_type = 'payment.authorize.v1' LIMIT 1) AS authorize_published \
         FROM orders o WHERE o.status = 'CONFIRMED' AND o.created_at >= ?",
    )
    .bind(since)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

fn ms(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().unwrap_or(0) as f64 / 1e3
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The daemon and the simulator on a database and topics of their own,
/// warmed up (group joins, schema caches, connection pools).
struct Stack {
    e: Env,
    addr: String,
    daemon: std::process::Child,
    simulator: std::process::Child,
    client: reqwest::Client,
}

/// `POST /orders` of one bench order, as a boxed future (spawned and cloned by the loads).
type Create = Arc<dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync>;

impl Stack {
    async fn start() -> Stack {
        let e = env("e2e").await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let denv = daemon_env(&e, port);
        let daemon = spawn(&["serve"], &denv);
        let mut sim_env = denv.clone();
        sim_env.retain(|(k, _)| k != "ORDER_SAGA_KAFKA_GROUP_ID");
        let simulator =
            spawn(&["simulate", "--group-id", &format!("bench-sim-{}", uuid::Uuid::new_v4().simple())], &sim_env);
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if client.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stack = Stack { e, addr, daemon, simulator, client };
        let create = stack.create();
        for i in 0..50 {
            create(format!("warm-{i}")).await;
        }
        wait_all_confirmed(&stack.e.db, Duration::from_secs(60)).await;
        stack
    }

    fn create(&self) -> Create {
        let client = self.client.clone();
        let url = format!("http://{}/orders", self.addr);
        let body = r#"{"customer_id":"bench","tenant_region":"eu-west","currency":"EUR","items":[{"sku":"SKU-1","qty":2,"unit_price":"19.99"}]}"#;
        Arc::new(move |key: String| {
            let (client, url) = (client.clone(), url.clone());
            Box::pin(async move {
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", key)
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 201)
            })
        })
    }

    fn procs(&self) -> Vec<probe::Proc> {
        vec![
            probe::Proc { name: "daemon", pid: self.daemon.id() },
            probe::Proc { name: "MariaDB", pid: probe::pid_of("mariadbd").unwrap_or(0) },
            probe::Proc { name: "broker (tansu)", pid: probe::pid_of("tansu").unwrap_or(0) },
            probe::Proc { name: "simulator", pid: self.simulator.id() },
            probe::Proc { name: "load generator", pid: std::process::id() },
        ]
    }

    /// The stack the next load level runs on: a new one after the first
    /// level when `fresh` ([`fresh_stack_per_level`]).
    async fn for_next_level(self, fresh: bool, levels_run: &mut usize) -> Stack {
        let stack = if fresh && *levels_run > 0 {
            self.stop().await;
            Stack::start().await
        } else {
            self
        };
        *levels_run += 1;
        stack
    }

    /// Stops the daemon and the simulator (the broker floor runs with nothing else).
    fn halt(&mut self) {
        let _ = self.simulator.kill();
        let _ = self.daemon.kill();
        let _ = self.simulator.wait();
        let _ = self.daemon.wait();
    }

    async fn stop(mut self) {
        self.halt();
        drop_db(&self.e.db, &self.e.url).await;
    }
}

/// Whether every load level gets a stack of its own (`BENCH_FRESH_STACK`,
/// default on; 0 runs all levels on one). tansu's fetch lists every batch a
/// partition has ever stored whenever a consumer is behind, so its cost per
/// fetch grows with the topics' history: on shared topics a level pays for
/// the levels before it (BENCHMARKS.md, "The broker's history").
fn fresh_stack_per_level() -> bool {
    std::env::var("BENCH_FRESH_STACK").map_or(true, |v| v != "0")
}

async fn end_to_end(dur: Duration) {
    let mut stack = Stack::start().await;
    let procs = stack.procs();
    // What the daemon costs with nothing to do (BENCH_IDLE_SECONDS, default 10;
    // 0 skips): polling, empty fetches, timer and relay ticks, watermark reports.
    let idle = std::env::var("BENCH_IDLE_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10u64);
    if idle > 0 {
        let window = probe::Window::open(&stack.e.db, &procs).await;
        tokio::time::sleep(Duration::from_secs(idle)).await;
        // "Per saga" with one saga per second: per second.
        let (cpu, db, b) = window.close(&stack.e.db, &procs, idle as usize).await;
        println!("\n### Idle: no load for {idle} s, per second\n");
        let names: Vec<&str> = procs.iter().map(|p| p.name).collect();
        println!(
            "| CPU ms per second: {} | statements/s | of which SELECT | COMMITs/s | box busy % |",
            names.join(" | ")
        );
        println!("|{}---:|---:|---:|---:|", "---:|".repeat(names.len()));
        let cells: Vec<String> = cpu.iter().map(|x| format!("{x:.1}")).collect();
        println!("| {} | {:.1} | {:.1} | {:.2} | {:.0} |", cells.join(" | "), db[0], db[4], db[1], b.busy);
    }
    println!("\n### End to end: create (HTTP) → CONFIRMED, simulator answering at once\n");
    println!(
        "| load | created/s | completed sagas/s | p50 ms | p95 ms | p99 ms | max ms | create→reserve published p50/p99 | reserve→reserved applied p50/p99 | applied→authorize published p50/p99 | authorize published→CONFIRMED p50/p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---|---|---|");
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 300, 600]);
    let clients: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 48]);
    // (label, CPU ms per saga per process, DB counters per saga, the box's CPU)
    let mut costs: Vec<(String, Vec<f64>, Vec<f64>, probe::BoxUse)> = Vec::new();
    let loads: Vec<LoadFrom> = std::env::var("BENCH_LOAD")
        .ok()
        .map(|v| v.split(',').filter_map(LoadFrom::parse).collect())
        .unwrap_or_else(|| vec![LoadFrom::InProcess, LoadFrom::External]);
    // What the external generator saw of itself, per level.
    let mut external_views: Vec<(String, serde_json::Value, usize)> = Vec::new();
    let fresh = fresh_stack_per_level();
    let mut levels_run = 0usize;
    for &rate in &rates {
        for &from in &loads {
            stack = stack.for_next_level(fresh, &mut levels_run).await;
            let procs = stack.procs();
            let create = stack.create();
            let since = Utc::now();
            let total = rate * dur.as_secs();
            let label = format!("open loop {rate}/s, {}", from.name());
            let (window, created_rate, external) = match from {
                LoadFrom::InProcess => {
                    let window = probe::Window::open(&stack.e.db, &procs).await;
                    let started = Instant::now();
                    let interval = Duration::from_secs_f64(1.0 / rate as f64);
                    let mut tick = tokio::time::interval(interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    let mut handles = Vec::new();
                    for i in 0..total {
                        tick.tick().await;
                        handles.push(tokio::spawn(create(format!("r{rate}-{i}"))));
                    }
                    for h in handles {
                        h.await.unwrap();
                    }
                    (window, total as f64 / started.elapsed().as_secs_f64(), None)
                }
                LoadFrom::External => {
                    let load = ExternalLoad::start(&stack.addr, rate, dur, &format!("x{rate}")).await;
                    let window = probe::Window::open(&stack.e.db, &procs).await;
                    let view = load.run().await;
                    let rate = view["sent"].as_f64().unwrap_or(0.0) / view["seconds"].as_f64().unwrap_or(f64::NAN);
                    (window, rate, Some(view))
                }
            };
            wait_all_confirmed(&stack.e.db, Duration::from_secs(120)).await;
            let n = report(&stack.e.db, since, &label, created_rate).await;
            let (mut cpu, db, box_use) = window.close(&stack.e.db, &procs, n).await;
            if let Some(view) = external {
                // The load generator's column: this process's polling plus the external generator.
                cpu[4] += view["cpu_seconds"].as_f64().unwrap_or(f64::NAN) * 1e3 / n.max(1) as f64;
                external_views.push((label.clone(), view, n));
            }
            costs.push((label, cpu, db, box_use));
        }
    }
    for c in clients {
        stack = stack.for_next_level(fresh, &mut levels_run).await;
        let procs = stack.procs();
        let since = Utc::now();
        let window = probe::Window::open(&stack.e.db, &procs).await;
        let create = stack.create();
        let stats = load(c, dur, move |n| create(format!("c{c}-{n}"))).await;
        wait_all_confirmed(&stack.e.db, Duration::from_secs(180)).await;
        let label = format!("closed loop, {c} clients");
        let n = report(&stack.e.db, since, &label, stats.rate()).await;
        let (cpu, db, box_use) = window.close(&stack.e.db, &procs, n).await;
        costs.push((label, cpu, db, box_use));
    }
    if !external_views.is_empty() {
        println!("\n#### The external load generator's own view (benches/load.py)\n");
        println!(
            "| load | sent | accepted (201) | send late p50 / p99 ms | POST response p50 / p99 ms | its CPU ms per order |"
        );
        println!("|---|---:|---:|---|---|---:|");
        for (label, v, _) in &external_views {
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {label} | {:.0} | {:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} |",
                f("sent"),
                f("accepted"),
                f("late_p50_ms"),
                f("late_p99_ms"),
                f("response_p50_ms"),
                f("response_p99_ms"),
                f("cpu_seconds") * 1e3 / f("sent").max(1.0)
            );
        }
    }
    println!(
        "\n#### CPU ms per completed saga, per process (/proc utime+stime, from the level's start until its last saga is CONFIRMED)\n"
    );
    let names: Vec<&str> = procs.iter().map(|p| p.name).collect();
    println!("| load | {} | all | daemon + MariaDB | box busy % | box iowait % | box steal % |", names.join(" | "));
    println!("|---|{}---:|---:|---:|---:|---:|", "---:|".repeat(names.len()));
    for (label, cpu, _, b) in &costs {
        let all: f64 = cpu.iter().filter(|x| x.is_finite()).sum();
        let cells: Vec<String> = cpu.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "| {label} | {} | {all:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            cells.join(" | "),
            cpu[0] + cpu[1],
            b.busy,
            b.iowait,
            b.steal
        );
    }
    println!(
        "\n#### Database work per completed saga (SHOW GLOBAL STATUS deltas; the benchmark's own polls subtracted)\n"
    );
    println!(
        "| load | statements | of which SELECT | explicit transactions (COMMIT) | InnoDB log writes | InnoDB fsyncs | statement prepares |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, _, db, _) in &costs {
        println!(
            "| {label} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
            db[0], db[4], db[1], db[2], db[3], db[5]
        );
    }
    // Messages through the broker per saga: every outbox row plus the participants' answers.
    let rows = count(&stack.e.db, "SELECT COUNT(*) FROM outbox").await as f64;
    let orders = count(&stack.e.db, "SELECT COUNT(*) FROM orders").await.max(1) as f64;
    let per_saga = rows / orders + 2.0;
    stack.halt();
    println!(
        "\n#### Broker floor: one produce → consume hop, nothing else running ({per_saga:.1} messages per saga; the saga crosses the broker 4 times on its critical path)\n"
    );
    println!("| saga rate it stands for | messages/s | hop p50 ms | hop p99 ms | hop max ms | 4 hops at p50 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for &rate in &rates {
        let floor_topic = format!("{}floor{rate}", stack.e.prefix);
        order_saga::kafka::admin::create_topics(&stack.e.client, &[floor_topic.as_str()], PARTITIONS, 1).await.unwrap();
        let msgs = (rate as f64 * per_saga).round() as u64;
        let (p50, p99, max, sent) =
            probe::broker_floor(&stack.e.client, &floor_topic, msgs, dur, Duration::from_millis(10)).await;
        println!("| {rate} sagas/s | {sent:.0} | {p50:.1} | {p99:.1} | {max:.1} | {:.0} |", 4.0 * p50);
    }
    stack.stop().await;
}

/// Where a level's open-loop load comes from (`BENCH_LOAD`, a comma list; default both).
#[derive(Debug, Clone, Copy, PartialEq)]
enum LoadFrom {
    /// Tasks of this process (reqwest), one per order.
    InProcess,
    /// `benches/load.py`: a separate Python process, as an outside probe sends it.
    External,
}

impl LoadFrom {
    fn parse(s: &str) -> Option<LoadFrom> {
        match s.trim() {
            "in-process" => Some(LoadFrom::InProcess),
            "external" => Some(LoadFrom::External),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            LoadFrom::InProcess => "in-process",
            LoadFrom::External => "external",
        }
    }
}

/// `benches/load.py`, connected and waiting for the word to start.
struct ExternalLoad {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl ExternalLoad {
    async fn start(addr: &str, rate: u64, dur: Duration, key_prefix: &str) -> ExternalLoad {
        use tokio::io::AsyncBufReadExt as _;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/load.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .args(["--addr", addr, "--rate", &rate.to_string(), "--seconds", &dur.as_secs().to_string()])
            .args(["--key-prefix", key_prefix])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 benches/load.py");
        let stdin = child.stdin.take().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        assert!(matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"), "load.py did not get ready: {ready:?}");
        ExternalLoad { child, stdin, lines }
    }

    /// Sends the load; returns the generator's own account of it.
    async fn run(mut self) -> serde_json::Value {
        use tokio::io::AsyncWriteExt as _;
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = self.lines.next_line().await.unwrap().expect("load.py's summary");
        let _ = self.child.wait().await;
        serde_json::from_str(&line).unwrap()
    }
}

async fn wait_all_confirmed(db: &Db, timeout: Duration) -> f64 {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if count(db, "SELECT COUNT(*) FROM orders WHERE status <> 'CONFIRMED'").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed().as_secs_f64()
}

/// Prints one row of the end-to-end table; returns how many sagas completed.
async fn report(db: &Db, since: DateTime<Utc>, label: &str, created_rate: f64) -> usize {
    let t = timelines(db, since).await;
    let total: Vec<f64> = t.iter().map(|x| ms(x.created_at, x.confirmed_at)).collect();
    let last = t.iter().map(|x| x.confirmed_at).max();
    let first = t.iter().map(|x| x.created_at).min();
    let completed_rate = match (first, last) {
        (Some(f), Some(l)) => t.len() as f64 / ((l - f).num_microseconds().unwrap_or(1) as f64 / 1e6),
        _ => 0.0,
    };
    let hop = |f: &dyn Fn(&Timeline) -> Option<f64>| {
        let v: Vec<f64> = t.iter().filter_map(f).collect();
        format!("{:.0} / {:.0}", pct(v.clone(), 0.5), pct(v, 0.99))
    };
    println!(
        "| {label} | {created_rate:.0} | {completed_rate:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
        pct(total.clone(), 0.5),
        pct(total.clone(), 0.95),
        pct(total.clone(), 0.99),
        pct(total, 1.0),
        hop(&|x| x.reserve_published.map(|p| ms(x.created_at, p))),
        hop(&|x| Some(ms(x.reserve_published?, x.reserved_applied?))),
        hop(&|x| Some(ms(x.reserved_applied?, x.authorize_published?))),
        hop(&|x| x.authorize_published.map(|p| ms(p, x.confirmed_at))),
    );
    t.len()
}
