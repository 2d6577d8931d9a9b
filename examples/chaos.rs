//! The chaos suite: `scripts/dev chaos [short|full]` (RELIABILITY.md).
//!
//! Each scenario starts a fresh database, topic set and consumer group, two or
//! three daemon processes (all behind a TCP proxy to MariaDB that the suite
//! owns) and the participant simulator, puts a load of sagas on them over
//! HTTP, injects one kind of fault, waits for the sagas to settle, and then
//! checks the database and every topic read from the beginning:
//!
//! * every order acknowledged with 201 exists (0 lost), and reaches the state
//!   its input implies (CONFIRMED, CANCELLED or PENDING_REVIEW) — else stalled;
//! * no logical command under two command ids, no release without a reserve,
//!   no void without an authorization (0 double effects);
//! * on the wire, each order's messages appear in outbox order per topic;
//! * no payment timeout fired before its due time (database time);
//! * every inbound message is in the inbox (no partition left stalled).
//!
//! One figures line per scenario, then `N passed, M failed`; exit code 1 on
//! any failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use order_saga::codec::Codec;
use order_saga::config::Topics;
use order_saga::contracts::*;
use order_saga::kafka::ClientSettings;
use order_saga::kafka::producer::Producer;
use order_saga::store::Db;
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use proxy::Proxy;

const PARTITIONS: i32 = 6;
/// Long enough that a crash, a rebalance (6 s session) or the longest
/// database outage (10 s, plus a 5 s retry backoff) does not let a payment
/// timeout overtake a payment that was answered: then every order has one
/// expected end state.
const PAYMENT_TIMEOUT_S: i64 = 20;
const OPS_TOKEN: &str = "chaos-ops-token-0123456789";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    Short,
    Full,
}

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_owned())
}

fn main() {
    let profile = match std::env::args().nth(1).as_deref() {
        Some("full") => Profile::Full,
        _ => Profile::Short,
    };
    let only: Option<String> = std::env::args().nth(2);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let code = rt.block_on(run(profile, only));
    std::process::exit(code);
}

/// What a scenario does to the cluster while the load runs.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// Arm a crash point (aborts at its Nth hit) on the first daemon, or on
    /// every daemon when which one reaches it is a race (due timers are
    /// claimed by whichever sweeper comes first, so arming one replica can
    /// leave the point unreached).
    CrashPoint(&'static str, u32, Arm),
    /// SIGKILL a random daemon this many times at random moments.
    RandomKills(u32),
    /// Cut every database connection for this long.
    DbOutage(Duration),
    /// Every participant answer twice, the copy 150 ms later (reordered).
    DuplicatesReordered,
    /// Bad events of every class mixed into the load.
    BadEvents,
    /// Three replicas; one SIGKILLed and a fourth added under load.
    ReplicaChurn,
    /// Every daemon SIGKILLed, all restarted this much later (longer than the
    /// payment timeout), while the participants answer in time.
    AllDown(Duration),
    /// The registry answers 503 for this long; one daemon restarts inside
    /// the window (and the other never registers: it only looks ids up).
    RegistryOutage(Duration),
    /// Stale replies (an older command id, another payment intent) for every
    /// order, and authorizations of the wrong amount for never-paid orders.
    StaleAndMismatched,
    /// Every established database connection stops forwarding without
    /// closing (a stuck server or middlebox); new connections go through.
    SilentConnections,
}

/// Which daemons a crash point is armed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arm {
    First,
    Every,
}

struct Scenario {
    name: &'static str,
    fault: Fault,
}

fn scenarios() -> Vec<Scenario> {
    use Fault::*;
    vec![
        Scenario { name: "baseline", fault: None },
        Scenario {
            name: "kill -9 after commit, before offset store",
            fault: CrashPoint("consumer.after_commit", 10, Arm::First),
        },
        Scenario {
            name: "kill -9 in the relay between ack and mark",
            fault: CrashPoint("relay.after_ack", 5, Arm::First),
        },
        Scenario { name: "kill -9 in the sweeper mid-fire", fault: CrashPoint("sweeper.after_fire", 1, Arm::Every) },
        Scenario {
            name: "kill -9 in POST /orders after commit",
            fault: CrashPoint("http.create.after_commit", 10, Arm::First),
        },
        Scenario {
            name: "kill -9 in an ops action after commit",
            fault: CrashPoint("ops.after_commit", 1, Arm::First),
        },
        Scenario { name: "kill -9 at random moments", fault: RandomKills(3) },
        Scenario { name: "database restart (all connections cut 4 s)", fault: DbOutage(Duration::from_secs(4)) },
        Scenario { name: "database unreachable > max.poll.interval", fault: DbOutage(Duration::from_secs(10)) },
        Scenario { name: "100% duplicated and reordered deliveries", fault: DuplicatesReordered },
        Scenario { name: "bad events of every class in the load", fault: BadEvents },
        Scenario { name: "3 replicas, one killed and one added", fault: ReplicaChurn },
        Scenario {
            name: "every daemon down longer than the payment timeout, payments in time",
            fault: AllDown(Duration::from_secs(35)),
        },
        Scenario {
            name: "database unreachable longer than the payment timeout",
            fault: DbOutage(Duration::from_secs(PAYMENT_TIMEOUT_S as u64 + 10)),
        },
        Scenario { name: "schema registry answering 503 for 10 s", fault: RegistryOutage(Duration::from_secs(10)) },
        Scenario { name: "stale and mismatched replies", fault: StaleAndMismatched },
        Scenario { name: "database connections silent mid-query", fault: SilentConnections },
    ]
}

#[derive(Default, Debug)]
struct Figures {
    sagas: usize,
    faults: u32,
    lost: usize,
    stalled: usize,
    double_effects: usize,
    wire_duplicates: usize,
    out_of_order: usize,
    early_timers: usize,
    stalled_partitions: usize,
    /// Orders whose payment was answered in time but that a payment timeout cancelled.
    cancelled_in_time: usize,
    /// Replies that moved a saga although they answered no awaited command,
    /// or an authorization of the wrong amount that confirmed an order.
    wrong_moves: usize,
    /// The most due timers deferred at once, and the longest watermark lag
    /// seen (scraped from the daemons' metrics every 200 ms while settling).
    deferred_max: u64,
    deferral_lag_s: f64,
    recover_s: f64,
    notes: Vec<String>,
}

impl Figures {
    fn passed(&self) -> bool {
        self.lost == 0
            && self.stalled == 0
            && self.double_effects == 0
            && self.out_of_order == 0
            && self.early_timers == 0
            && self.stalled_partitions == 0
            && self.cancelled_in_time == 0
            && self.wrong_moves == 0
    }
}

async fn run(profile: Profile, only: Option<String>) -> i32 {
    let sagas = match profile {
        Profile::Short => 60,
        Profile::Full => 400,
    };
    println!(
        "chaos suite ({} profile, {sagas} sagas per scenario)\n",
        if profile == Profile::Full { "full" } else { "short" }
    );
    println!(
        "| scenario | sagas | faults | lost | stalled | double effects | duplicates on the wire | out of order | early timers | stalled partitions | paid in time, cancelled | wrong moves | timers deferred (max, lag) | recovered in | result |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let (mut passed, mut failed) = (0, 0);
    for s in scenarios() {
        if only.as_deref().is_some_and(|o| !s.name.contains(o)) {
            continue;
        }
        let f = scenario(&s, sagas, profile).await;
        let ok = f.passed();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}, {:.0} s | {:.1} s | {} |",
            s.name,
            f.sagas,
            f.faults,
            f.lost,
            f.stalled,
            f.double_effects,
            f.wire_duplicates,
            f.out_of_order,
            f.early_timers,
            f.stalled_partitions,
            f.cancelled_in_time,
            f.wrong_moves,
            f.deferred_max,
            f.deferral_lag_s,
            f.recover_s,
            if ok { "pass" } else { "FAIL" }
        );
        for n in &f.notes {
            eprintln!("    {}: {n}", s.name);
        }
        if ok { passed += 1 } else { failed += 1 }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 { 1 } else { 0 }
}

/// One daemon process, restarted by the supervisor when it dies.
struct Daemon {
    child: Child,
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Daemon {
    fn spawn(bin: &PathBuf, env: &[(String, String)], port: u16, log: &PathBuf) -> Child {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        Command::new(bin)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // CHAOS_LOG: the daemons' log filter (commas allowed, unlike CHAOS_DAEMON_ENV).
            .envs(std::env::var("CHAOS_LOG").ok().map(|v| ("ORDER_SAGA_LOG", v)))
            .env("ORDER_SAGA_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn order-saga")
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    bin: PathBuf,
    base_env: Vec<(String, String)>,
    daemons: Vec<Daemon>,
    http: reqwest::Client,
    restarts: u32,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    fn add(&mut self, extra: &[(&str, &str)]) {
        let port = free_port();
        let mut env = self.base_env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let log = std::env::temp_dir().join(format!("chaos-daemon-{port}.log"));
        let child = Daemon::spawn(&self.bin, &env, port, &log);
        self.daemons.push(Daemon { child, port, env, log });
    }

    /// Restarts dead daemons (without their crash points: the fault happened).
    fn supervise(&mut self) {
        for d in &mut self.daemons {
            if !d.alive() {
                d.env.retain(|(k, _)| k != "ORDER_SAGA_FAILPOINTS");
                d.child = Daemon::spawn(&self.bin, &d.env, d.port, &d.log);
                self.restarts += 1;
            }
        }
    }

    async fn wait_ready(&self, i: usize) {
        let url = format!("http://127.0.0.1:{}/readyz", self.daemons[i].port);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("daemon on {} not ready; log {}", self.daemons[i].port, self.daemons[i].log.display());
    }

    fn kill_all(&mut self) {
        for d in &mut self.daemons {
            d.kill();
        }
    }
}

/// What an order's input implies for its final status. Orders whose payment
/// is never answered (the timeout cancels them) take the payment timeout to
/// settle: the short profile has them only where the sweeper is the subject.
fn expected(i: usize, silent: bool) -> (&'static str, Value) {
    let (customer, sku, status) = match i % 10 {
        9 if !silent => (format!("c-{i}"), "SKU-1".to_owned(), "CONFIRMED"),
        7 => (format!("decline-{i}"), "SKU-1".to_owned(), "CANCELLED"),
        8 => (format!("c-{i}"), "OOS-1".to_owned(), "PENDING_REVIEW"),
        9 => (format!("silent-{i}"), "SKU-1".to_owned(), "CANCELLED"),
        _ => (format!("c-{i}"), "SKU-1".to_owned(), "CONFIRMED"),
    };
    let region = ["eu-west", "us-east", "ap-south"][i % 3];
    (
        status,
        json!({"customer_id": customer, "tenant_region": region, "currency": "EUR",
               "items": [{"sku": sku, "qty": 1 + (i % 3), "unit_price": "10.00"}]}),
    )
}

struct Placed {
    order_id: u64,
    expect: &'static str,
}

/// Creates one order, retrying with the same idempotency key through crashes.
async fn place(http: &reqwest::Client, ports: &[u16], i: usize, key: &str, silent: bool) -> Option<Placed> {
    let (expect, body) = expected(i, silent);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut attempt = i;
    while Instant::now() < deadline {
        let port = ports[attempt % ports.len()];
        attempt += 1;
        let r = http
            .post(format!("http://127.0.0.1:{port}/orders"))
            .header("idempotency-key", key)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        if let Ok(r) = r
            && r.status().as_u16() == 201
        {
            let v: Value = r.json().await.unwrap();
            return Some(Placed { order_id: v["order_id"].as_u64().unwrap(), expect });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn scenario(s: &Scenario, sagas: usize, profile: Profile) -> Figures {
    let mut fig = Figures { sagas, ..Default::default() };
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("  [{:>6.1} s] {}: {what}", t0.elapsed().as_secs_f64(), s.name);
    let brokers = env_or("ORDER_SAGA_TEST_KAFKA_BROKERS", "127.0.0.1:19092");
    let db_base = env_or("ORDER_SAGA_TEST_DATABASE_URL", "mysql://order_saga:order_saga@127.0.0.1:3306");
    let bin = PathBuf::from(env_or("ORDER_SAGA_BIN", "target/debug/order-saga"));
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("order_saga_t_chaos_{}", &tag[..10]);
    let admin = Db::connect(&db_base, 2, Duration::from_secs(10)).await.expect("database (scripts/dev up)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`"))).execute(&admin.pool).await.unwrap();
    admin.pool.close().await;
    let db_url = format!("{db_base}/{name}");
    let db = Db::connect(&db_url, 4, Duration::from_secs(10)).await.unwrap();
    db.migrate().await.unwrap();
    let upstream = db_base.rsplit('@').next().unwrap().to_owned();
    let proxy = Proxy::start(upstream).await;
    let proxied = format!("{}@127.0.0.1:{}/{name}", db_base.rsplit_once('@').unwrap().0, proxy.port);
    let (registry_url, registry) = order_saga::devtools::registry::spawn_local().await.unwrap();
    let prefix = format!("c{}.", &tag[..10]);
    let topics = Topics::with_prefix(&prefix);
    let client = ClientSettings::plaintext(&brokers);
    // A broker that has just started may time out the first admin request.
    let mut attempt = 0;
    while let Err(e) = order_saga::kafka::admin::create_topics(&client, &topics.all(), PARTITIONS, 1).await {
        attempt += 1;
        assert!(attempt < 5, "cannot create topics: {e}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let codec = Codec::new(&registry_url, Duration::from_secs(5)).unwrap();
    let group = format!("chaos-{}", &tag[..10]);
    commit_from_the_start(&client, &group, &topics.inbound());
    let base_env: Vec<(String, String)> = [
        ("ORDER_SAGA_DATABASE_URL", proxied.as_str()),
        ("ORDER_SAGA_DATABASE_ACQUIRE_TIMEOUT", "2s"),
        ("ORDER_SAGA_KAFKA_BROKERS", brokers.as_str()),
        ("ORDER_SAGA_SCHEMA_REGISTRY_URL", registry_url.as_str()),
        ("ORDER_SAGA_KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("ORDER_SAGA_KAFKA_GROUP_ID", group.as_str()),
        ("ORDER_SAGA_KAFKA_SESSION_TIMEOUT", "6s"),
        ("ORDER_SAGA_KAFKA_FETCH_WAIT_MAX", "20ms"),
        ("ORDER_SAGA_KAFKA_PROPERTIES", "max.poll.interval.ms=7000"),
        ("ORDER_SAGA_OUTBOX_POLL_INTERVAL", "50ms"),
        ("ORDER_SAGA_OUTBOX_LEASE_TTL", "3s"),
        ("ORDER_SAGA_OUTBOX_SHARDS", "8"),
        ("ORDER_SAGA_TIMERS", "payment_timeout=20s"),
        ("ORDER_SAGA_SHUTDOWN_GRACE", "10s"),
        ("ORDER_SAGA_LOG_FORMAT", "text"),
        ("ORDER_SAGA_LOG", "info"),
        ("ORDER_SAGA_OPS_TOKEN", OPS_TOKEN),
        ("ORDER_SAGA_SAGAS_DIR", "sagas"),
        ("ORDER_SAGA_DATABASE_MAX_CONNECTIONS", "8"),
        // A silent connection is given up after this (the default 30 s would
        // only make the silent-connection scenario slower).
        ("ORDER_SAGA_DATABASE_DEADLINE", "5s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    // CHAOS_DAEMON_ENV=K=V,K=V: extra daemon settings, to see what a scenario
    // does without a defence (e.g. ORDER_SAGA_TIMER_EVENT_TIME=false).
    .chain(
        env_or("CHAOS_DAEMON_ENV", "")
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))),
    )
    .collect();
    let mut cluster = Cluster {
        bin: bin.clone(),
        base_env: base_env.clone(),
        daemons: Vec::new(),
        http: reqwest::Client::new(),
        restarts: 0,
    };
    let replicas = if matches!(s.fault, Fault::ReplicaChurn) { 3 } else { 2 };
    for i in 0..replicas {
        match s.fault {
            Fault::CrashPoint(point, n, arm) if i == 0 || arm == Arm::Every => {
                let fp = format!("{point}={n}");
                cluster.add(&[("ORDER_SAGA_FAILPOINTS", fp.as_str())]);
            }
            // The second daemon never registers schemas: it looks their ids up.
            Fault::RegistryOutage(_) if i == 1 => cluster.add(&[("ORDER_SAGA_SCHEMA_REGISTRY_AUTO_REGISTER", "false")]),
            _ => cluster.add(&[]),
        }
    }
    for i in 0..cluster.daemons.len() {
        cluster.wait_ready(i).await;
    }
    phase("daemons ready");
    // The participant simulator, as its own process.
    let sim_log = std::env::temp_dir().join(format!("chaos-sim-{}.log", &tag[..10]));
    let mut sim_args = vec!["simulate".to_owned(), "--group-id".into(), format!("sim-{}", &tag[..10])];
    if matches!(s.fault, Fault::DuplicatesReordered) {
        sim_args.extend(["--duplicate-rate".into(), "1".into(), "--duplicate-delay".into(), "150ms".into()]);
    }
    // Payments answered 5 s after the command, well inside the 20 s timeout,
    // so that they arrive while the daemons (or their database) are away.
    let outlasts_timeout = match s.fault {
        Fault::AllDown(d) | Fault::DbOutage(d) => d.as_secs() as i64 > PAYMENT_TIMEOUT_S,
        _ => false,
    };
    if outlasts_timeout {
        sim_args.extend(["--payment-delay".into(), "5s".into()]);
    }
    // The daemons' consumer settings (a short max.poll.interval) are not the simulator's.
    let sim_env: Vec<(String, String)> =
        base_env.iter().filter(|(k, _)| k != "ORDER_SAGA_KAFKA_PROPERTIES").cloned().collect();
    let spawn_sim = || {
        Command::new(&bin)
            .args(&sim_args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(sim_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(&sim_log).unwrap()))
            .spawn()
            .unwrap()
    };
    let mut sim = spawn_sim();

    // The load: `sagas` orders at ~`rate`/s over the daemons, in parallel.
    let rate = if profile == Profile::Full { 40.0 } else { 20.0 };
    let ports: Vec<u16> = cluster.daemons.iter().map(|d| d.port).collect();
    let silent = profile == Profile::Full
        || matches!(s.fault, Fault::CrashPoint("sweeper.after_fire", ..) | Fault::StaleAndMismatched);
    let started = Instant::now();
    let load = {
        let http = cluster.http.clone();
        let ports = ports.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for i in 0..sagas {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                let (http, ports) = (http.clone(), ports.clone());
                tasks.push(tokio::spawn(async move { place(&http, &ports, i, &format!("chaos-{i}"), silent).await }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    };

    // The fault, mid-load.
    let load_secs = sagas as f64 / rate;
    tokio::time::sleep(Duration::from_secs_f64(load_secs / 3.0)).await;
    let fault_at = Instant::now();
    let producer = Producer::new(&client, Duration::from_secs(30)).unwrap();
    let mut bad_events = 0;
    let mut injector = None;
    match s.fault {
        Fault::None | Fault::DuplicatesReordered => {}
        Fault::CrashPoint(..) => {} // counted as the restarts it causes
        Fault::RandomKills(n) => {
            for _ in 0..n {
                let wait = rand::rng().random_range(0.3..(load_secs / 4.0).max(0.5));
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                let i = rand::rng().random_range(0..cluster.daemons.len());
                cluster.daemons[i].kill();
                fig.faults += 1;
                cluster.supervise();
            }
        }
        Fault::DbOutage(d) => {
            if outlasts_timeout {
                wait_for_payments_pending(&mut fig, &db, sagas).await;
            }
            proxy.cut();
            tokio::time::sleep(d).await;
            proxy.restore();
            fig.faults = 1;
        }
        Fault::BadEvents => {
            for (i, m) in bad_messages(&tag).into_iter().enumerate() {
                order_saga::devtools::simulator::publish(&producer, &codec, &topics, &m, &[]).await.unwrap();
                bad_events = i + 1;
            }
            // Undecodable bytes too.
            producer
                .enqueue(topics.of(MessageKind::PaymentAuthorized), b"424242", b"\x00garbage", &[])
                .await
                .unwrap()
                .await
                .unwrap();
            bad_events += 1;
            fig.faults = bad_events as u32;
        }
        Fault::ReplicaChurn => {
            cluster.daemons[1].kill();
            fig.faults = 1;
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.add(&[]);
            let last = cluster.daemons.len() - 1;
            cluster.wait_ready(last).await;
            fig.faults += 1;
        }
        Fault::AllDown(d) => {
            wait_for_payments_pending(&mut fig, &db, sagas).await;
            phase("every daemon killed");
            cluster.kill_all();
            tokio::time::sleep(d).await;
            // They come back with consumers that join late (a slow
            // rebalance): their sweepers run first, and due timers must wait.
            for d in &mut cluster.daemons {
                d.env.push(("ORDER_SAGA_FAILPOINTS".into(), "consumer.before_poll=8000".into()));
                d.child = Daemon::spawn(&cluster.bin, &d.env, d.port, &d.log);
            }
            fig.faults = cluster.daemons.len() as u32;
            phase("daemons restarted");
        }
        Fault::RegistryOutage(d) => {
            registry.fail_for("", 503, d);
            cluster.daemons[0].kill();
            cluster.supervise();
            fig.faults = 1;
        }
        Fault::StaleAndMismatched => {
            injector = Some(tokio::spawn(inject_stale_and_mismatched(
                db.clone(),
                producer.clone(),
                codec.clone(),
                topics.clone(),
                Instant::now() + Duration::from_secs_f64(load_secs) + Duration::from_secs(15),
            )));
        }
        Fault::SilentConnections => {
            // Three times during the load, so that some silences fall inside
            // transactions that hold row locks.
            for i in 0..3 {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                proxy.silence();
                fig.faults += 1;
            }
        }
    }
    // Ops actions on PENDING_REVIEW orders (cancel), through any daemon; the
    // crash-point scenario for ops arms its first hit.
    let ops_cancels = ops_cancel_some(&mut cluster, &db).await;

    // Keep dead daemons restarted until the load is in.
    let placed: Vec<Option<Placed>> = loop {
        cluster.supervise();
        scrape_deferral(&mut fig, &cluster).await;
        if load.is_finished() {
            break load.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    phase("load placed");
    let mut orders: BTreeMap<u64, &'static str> = BTreeMap::new();
    for (i, p) in placed.iter().enumerate() {
        match p {
            Some(p) => {
                orders.insert(p.order_id, p.expect);
            }
            None => fig.notes.push(format!("order {i} was never acknowledged")),
        }
    }
    for id in &ops_cancels {
        orders.insert(*id, "CANCELLED");
    }

    // Settle: every order in its expected status (the supervisor keeps restarting).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        cluster.supervise();
        if !matches!(sim.try_wait(), Ok(None)) {
            fig.notes.push(format!("the simulator exited; restarted (log {})", sim_log.display()));
            sim = spawn_sim();
        }
        scrape_deferral(&mut fig, &cluster).await;
        let statuses = statuses(&db).await;
        // After an outage longer than the timeout, a payment command may itself
        // have gone out too late: CANCELLED is then right, and the figure
        // "paid in time, cancelled" judges each cancellation by the wire.
        let settled = |id: &u64, want: &str| {
            let got = statuses.get(id).map(String::as_str);
            got == Some(want) || (outlasts_timeout && want == "CONFIRMED" && got == Some("CANCELLED"))
        };
        let pending: Vec<(&u64, &&str)> = orders.iter().filter(|(id, want)| !settled(id, want)).collect();
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            fig.stalled = pending.len();
            fig.notes.push(format!(
                "not settled: {:?}",
                pending.iter().take(5).map(|(id, w)| (id, w, statuses.get(id))).collect::<Vec<_>>()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fig.recover_s = fault_at.elapsed().as_secs_f64();
    phase("settled");
    // Outbox drained before reading the wire.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await > 0 && Instant::now() < deadline {
        cluster.supervise();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase("outbox drained");
    fig.faults = fig.faults.max(cluster.restarts);
    if matches!(s.fault, Fault::CrashPoint(..)) && cluster.restarts == 0 {
        fig.notes.push("the crash point was never reached: nothing was tested".into());
        fig.stalled += 1;
    }

    let statuses = statuses(&db).await;
    fig.lost =
        orders.keys().filter(|id| !statuses.contains_key(id)).count() + placed.iter().filter(|p| p.is_none()).count();
    let authorized_at = check_wire(&mut fig, &db, &client, &codec, &topics, &orders).await;
    phase("wire checked");
    if matches!(s.fault, Fault::DuplicatesReordered) {
        // Every answer was sent twice: the extra copies on the wire are the faults.
        fig.faults = fig.wire_duplicates as u32;
        if fig.faults == 0 {
            fig.notes.push("no duplicate reached the wire: nothing was tested".into());
            fig.stalled += 1;
        }
    }
    fig.early_timers = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM saga_transitions t JOIN saga_transitions a ON a.order_id = t.order_id \
         AND a.to_state = 'AWAITING_PAYMENT' AND a.from_state <> 'AWAITING_PAYMENT' \
         WHERE t.event_name = 'timer.payment_timeout' \
         AND TIMESTAMPDIFF(MICROSECOND, a.occurred_at, t.occurred_at) < ?",
    )
    .bind(PAYMENT_TIMEOUT_S * 1_000_000)
    .fetch_one(&db.pool)
    .await
    .unwrap_or(-1) as usize;
    // A payment answered in time never ends in a timeout cancellation.
    let timed_out: HashSet<u64> = sqlx::query_scalar::<_, u64>(
        "SELECT order_id FROM order_status_history WHERE to_status = 'CANCELLED' AND reason_code = 'PAYMENT_TIMEOUT'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap_or_default()
    .into_iter()
    .collect();
    // Due times: entering AWAITING_PAYMENT (database time) plus the timeout.
    let due: HashMap<u64, i64> = sqlx::query_as::<_, (u64, i64)>(
        "SELECT order_id, CAST(UNIX_TIMESTAMP(MAX(occurred_at)) * 1000000 AS SIGNED) FROM saga_transitions \
         WHERE to_state = 'AWAITING_PAYMENT' AND from_state <> 'AWAITING_PAYMENT' GROUP BY order_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap_or_default()
    .into_iter()
    .map(|(id, at)| (id, at + PAYMENT_TIMEOUT_S * 1_000_000))
    .collect();
    let mut late = 0;
    for id in &timed_out {
        match (authorized_at.get(id), due.get(id)) {
            (Some(paid), Some(due)) if paid < due => {
                fig.cancelled_in_time += 1;
                fig.notes.push(format!(
                    "order {id}: authorized {} ms before its deadline, cancelled by the timeout",
                    (due - paid) / 1000
                ));
            }
            (Some(_), Some(_)) => late += 1,
            _ => {}
        }
    }
    if late > 0 {
        fig.notes.push(format!(
            "{late} orders were authorized after their deadline (their command went out late: our outage) and cancelled by the timeout"
        ));
    }
    if let Some(injector) = injector {
        let (stale, mismatched) = injector.await.unwrap();
        fig.faults = (stale + mismatched) as u32;
        // Nothing they carried may have moved a saga, and no never-paid order
        // may be CONFIRMED by an authorization of the wrong amount.
        fig.wrong_moves = count(
            &db,
            "SELECT COUNT(*) FROM saga_transitions WHERE event_id LIKE 'stale-%' AND from_state <> to_state",
        )
        .await as usize
            + count(&db, "SELECT COUNT(*) FROM orders WHERE customer_id LIKE 'silent-%' AND status = 'CONFIRMED'").await
                as usize;
        let recorded = count(&db, "SELECT COUNT(*) FROM saga_inbox WHERE event_id LIKE 'stale-%'").await;
        let voided = count(
            &db,
            "SELECT COUNT(DISTINCT order_id) FROM order_status_history WHERE reason_code = 'PAYMENT_MISMATCH'",
        )
        .await;
        fig.notes.push(format!(
            "{stale} stale replies injected, {recorded} recorded without effect; {mismatched} authorizations of the wrong amount, {voided} orders cancelled for it"
        ));
        if stale == 0 || mismatched == 0 {
            fig.notes.push("nothing was injected: nothing was tested".into());
            fig.stalled += 1;
        }
    }
    if matches!(s.fault, Fault::BadEvents) {
        let dlq = count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = 'dead_letter'").await as usize;
        if dlq != bad_events {
            fig.notes.push(format!("{bad_events} bad events, {dlq} dead letters"));
            fig.stalled_partitions += bad_events.abs_diff(dlq);
        }
    }
    cluster.kill_all();
    let _ = sim.kill();
    let _ = sim.wait();
    if !fig.passed() || std::env::var_os("CHAOS_KEEP").is_some() {
        fig.notes.push(format!("database kept: {name}"));
        for d in &cluster.daemons {
            fig.notes.push(format!("daemon log: {}", d.log.display()));
        }
    } else {
        for d in &cluster.daemons {
            let _ = std::fs::remove_file(&d.log);
        }
        let _ = std::fs::remove_file(&sim_log);
        db.pool.close().await;
        let admin = Db::connect(&db_base, 2, Duration::from_secs(10)).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`"))).execute(&admin.pool).await;
    }
    fig
}

/// Waits (up to a minute) until a sixth of the sagas wait for their payment
/// and their payment commands are on the wire, so that the fault that follows
/// holds payment timers whose payments will be answered in time; notes how many.
async fn wait_for_payments_pending(fig: &mut Figures, db: &Db, sagas: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = (sagas / 6) as i64;
    let sent = || {
        count(
            db,
            "SELECT COUNT(*) FROM outbox o JOIN saga_instances s ON s.order_id = CAST(o.aggregate_id AS UNSIGNED) \
             WHERE o.event_type = 'payment.authorize.v1' AND o.published_at IS NOT NULL AND s.state = 'AWAITING_PAYMENT'",
        )
    };
    while sent().await < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fig.notes.push(format!(
        "{} sagas were waiting for a payment command already on the wire when the fault began",
        sent().await
    ));
}

/// The most timers deferred at once and the longest watermark lag any
/// daemon reports right now.
async fn scrape_deferral(fig: &mut Figures, cluster: &Cluster) {
    for d in &cluster.daemons {
        let url = format!("http://127.0.0.1:{}/metrics", d.port);
        let Ok(r) = cluster.http.get(&url).timeout(Duration::from_secs(2)).send().await else { continue };
        let Ok(text) = r.text().await else { continue };
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next().and_then(|v| v.parse::<f64>().ok())) {
                (Some("saga_timers_deferred"), Some(v)) => fig.deferred_max = fig.deferred_max.max(v as u64),
                (Some("saga_timer_watermark_lag_seconds"), Some(v)) => fig.deferral_lag_s = fig.deferral_lag_s.max(v),
                _ => {}
            }
        }
    }
}

/// Until `until`: for every order, a reservation answering a reserve command
/// never sent and an authorization of another payment intent (stale: they
/// must move nothing); for every never-paid order waiting for its payment,
/// an authorization of its intent for 0.01 USD (mismatched: it must cancel
/// and void, never confirm). Returns how many of each were published.
async fn inject_stale_and_mismatched(
    db: Db,
    producer: Producer,
    codec: Codec,
    topics: Topics,
    until: Instant,
) -> (usize, usize) {
    let (mut stale, mut mismatched) = (HashSet::new(), HashSet::new());
    let publish = |m: Message| {
        let (producer, codec, topics) = (producer.clone(), codec.clone(), topics.clone());
        async move { order_saga::devtools::simulator::publish(&producer, &codec, &topics, &m, &[]).await.unwrap() }
    };
    while Instant::now() < until {
        let rows: Vec<(u64, String, String, String)> = sqlx::query_as(
            "SELECT o.order_id, o.customer_id, o.tenant_region, s.state FROM orders o \
             JOIN saga_instances s ON s.order_id = o.order_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default();
        let ts = TimestampMicros::from_datetime(chrono::Utc::now());
        for (id, customer, region, state) in rows {
            let order_id = id as i64;
            if stale.insert(id) {
                publish(Message::from(InventoryReserved {
                    event_id: format!("stale-res-{id}"),
                    order_id,
                    occurred_at: ts,
                    tenant_region: region.clone(),
                    command_id: Some(format!("{id}:reserve_inventory:reserve:7")),
                }))
                .await;
                publish(Message::from(PaymentAuthorized {
                    event_id: format!("stale-pay-{id}"),
                    order_id,
                    occurred_at: ts,
                    tenant_region: region.clone(),
                    payment_intent_id: format!("pi-{id}-9"),
                    amount: "0.01".into(),
                    currency: "USD".into(),
                }))
                .await;
            }
            if customer.starts_with("silent-") && state == "AWAITING_PAYMENT" && mismatched.insert(id) {
                publish(Message::from(PaymentAuthorized {
                    event_id: format!("mismatch-{id}"),
                    order_id,
                    occurred_at: ts,
                    tenant_region: region,
                    payment_intent_id: format!("pi-{id}-1"),
                    amount: "0.01".into(),
                    currency: "USD".into(),
                }))
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (stale.len() * 2, mismatched.len())
}

fn bad_messages(tag: &str) -> Vec<Message> {
    let ts = TimestampMicros::from_datetime(chrono::Utc::now());
    let failed = |event_id: String, order_id: i64| {
        Message::from(PaymentFailed {
            event_id,
            order_id,
            occurred_at: ts,
            tenant_region: "eu".into(),
            payment_intent_id: "pi".into(),
            reason: "x".into(),
        })
    };
    vec![
        failed(format!("neg-{tag}"), -5),
        failed(format!("ünï-{tag}"), 900_001),
        failed("y".repeat(300), 900_002),
        failed(format!("pad-{tag} "), 900_003),
        failed(format!("{}-{tag}", "x".repeat(60)), 900_004),
    ]
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(&db.pool).await.unwrap_or(-1)
}

async fn statuses(db: &Db) -> HashMap<u64, String> {
    sqlx::query_as::<_, (u64, String)>("SELECT order_id, status FROM orders")
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Cancels up to three PENDING_REVIEW sagas through /ops, retrying through
/// crashes; returns the orders that end CANCELLED by this.
async fn ops_cancel_some(cluster: &mut Cluster, db: &Db) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = Vec::new();
    while done.len() < 3 && Instant::now() < deadline {
        let ids: Vec<(u64, u32)> = sqlx::query_as(
            "SELECT order_id, version FROM saga_instances WHERE state = 'PENDING_REVIEW' ORDER BY order_id LIMIT 3",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default();
        for (id, version) in ids {
            if done.contains(&id) {
                continue;
            }
            let port = cluster.daemons[0].port;
            let body =
                json!({"action": "cancel", "expected_version": version, "actor": "ops:chaos", "reason": "chaos"});
            let _ = cluster
                .http
                .post(format!("http://127.0.0.1:{port}/ops/sagas/{id}/actions"))
                .bearer_auth(OPS_TOKEN)
                .timeout(Duration::from_secs(10))
                .json(&body)
                .send()
                .await;
            // Applied or not, the answer may be lost in a crash: the saga's state says.
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM saga_instances WHERE order_id = ?")
                .bind(id)
                .fetch_optional(&db.pool)
                .await
                .ok()
                .flatten();
            if state.as_deref() == Some("CANCELLED") {
                done.push(id);
            }
        }
        cluster.supervise();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    done
}

/// Notes which rows the outbox calls published but the reader did not find
/// (outbox id, order, shard, attempts, when it was marked), so a shortfall
/// can be traced to its relay round and partition.
async fn missing_on_wire(fig: &mut Figures, db: &Db, topic: &str, on_wire: &HashSet<&str>) {
    let rows = sqlx::query_as::<_, (u64, String, String, u16, i32, String)>(
        "SELECT id, event_id, aggregate_id, shard, attempts, DATE_FORMAT(published_at, '%H:%i:%s.%f') FROM outbox \
         WHERE topic = ? AND published_at IS NOT NULL ORDER BY id",
    )
    .bind(topic)
    .fetch_all(&db.pool)
    .await
    .expect("reading the published outbox rows");
    for r in rows.iter().filter(|r| !on_wire.contains(r.1.as_str())).take(10) {
        fig.notes.push(format!(
            "  missing: outbox id {} order {} shard {} attempts {} published_at {}",
            r.0, r.2, r.3, r.4, r.5
        ));
    }
}

struct WireMsg {
    partition: i32,
    offset: i64,
    event_id: String,
    msg: Option<Message>,
}

/// Commits offset 0 for `group` on every partition of `topics` and checks
/// that the broker kept it: the daemons' group reads the fresh topics from
/// their start, as a group that has consumed them since they were created
/// would. Without it, a partition whose first replies arrive just before a
/// daemon is killed has no committed offset; the replica that takes it over
/// starts at the broker's earliest offset (`auto.offset.reset=earliest`), and
/// tansu 0.6.0 can report that past records it still serves (RELIABILITY.md,
/// "Five payments never answered"): the replies were skipped and their orders
/// cancelled by the payment timeout. Apache Kafka reports earliest offsets
/// correctly, so the daemon's consumer keeps the standard reset.
fn commit_from_the_start(client: &ClientSettings, group: &str, topics: &[&str]) {
    let mut c = client.client_config();
    c.set("group.id", group);
    c.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Offset(0)).unwrap();
        }
    }
    let mut attempt = 0;
    while let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        attempt += 1;
        assert!(attempt < 5, "cannot commit the group's starting offsets: {e}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(0),
            "{} [{}]: the broker did not keep offset 0",
            e.topic(),
            e.partition()
        );
    }
}

/// Reads a topic from the beginning until at least `expect` distinct event
/// ids arrived (what the outbox says was published there) and the topic has
/// been quiet for a moment — tansu 0.6.0 under-reports high watermarks, so
/// they cannot tell the end. Gives up after a minute.
/// (partition, offset, payload, headers) of every record.
type RawRecord = (i32, i64, Option<Vec<u8>>, HashMap<String, String>);

fn read_all(client: &ClientSettings, topic: &str, expect: usize) -> Vec<RawRecord> {
    let mut c = client.client_config();
    c.set("group.id", format!("reader-{}", uuid::Uuid::new_v4().simple()));
    c.set("enable.auto.commit", "false");
    c.set("fetch.wait.max.ms", "20");
    // A reset (the broker calling offset 0 out of range) must re-read from the
    // start, never jump to the end and skip what is there.
    c.set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    // High watermarks: a lower bound of what is there (tansu under-reports).
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in 0..PARTITIONS {
        let (_, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap_or((0, 0));
        ends.insert(p, hi);
        // Offset 0, not Offset::Beginning: tansu 0.6.0 can report a partition's
        // earliest offset past records it still serves (RELIABILITY.md); the
        // topics are fresh per run and never truncated.
        tpl.add_partition_offset(topic, p, Offset::Offset(0)).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reached = ends.iter().all(|(p, hi)| next.get(p).copied().unwrap_or(0) >= *hi);
        let done = reached && ids.len() >= expect && quiet_since.elapsed() >= Duration::from_millis(500);
        if done || Instant::now() >= deadline {
            break;
        }
        let m = match consumer.poll(Duration::from_millis(50)) {
            None => continue,
            Some(Err(e)) => {
                eprintln!("    reading {topic}: {e}");
                continue;
            }
            Some(Ok(m)) => m,
        };
        quiet_since = Instant::now();
        next.insert(m.partition(), m.offset() + 1);
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for x in h.iter() {
                if let Some(v) = x.value {
                    headers.insert(x.key.to_owned(), String::from_utf8_lossy(v).into_owned());
                }
            }
        }
        if let Some(id) = headers.get("event_id") {
            ids.insert(id.clone());
        }
        out.push((m.partition(), m.offset(), m.payload().map(<[u8]>::to_vec), headers));
    }
    out
}

async fn check_wire(
    fig: &mut Figures,
    db: &Db,
    client: &ClientSettings,
    codec: &Codec,
    topics: &Topics,
    orders: &BTreeMap<u64, &'static str>,
) -> HashMap<u64, i64> {
    let outbox_ids: HashMap<String, u64> = sqlx::query_as::<_, (String, u64)>("SELECT event_id, id FROM outbox")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let inbox: HashSet<String> = sqlx::query_scalar::<_, String>("SELECT event_id FROM saga_inbox")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let mut wire: HashMap<MessageKind, Vec<WireMsg>> = HashMap::new();
    for &kind in MessageKind::ALL {
        let topic = topics.of(kind).to_owned();
        // What the outbox says reached this topic: it must all be there.
        let published =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE topic = ? AND published_at IS NOT NULL")
                .bind(&topic)
                .fetch_one(&db.pool)
                .await
                .unwrap_or(0) as usize;
        let client = client.clone();
        let t = topic.clone();
        let raw = tokio::task::spawn_blocking(move || read_all(&client, &t, published)).await.unwrap();
        let on_wire: HashSet<&str> =
            raw.iter().filter_map(|(_, _, _, h)| h.get("event_id").map(String::as_str)).collect();
        if on_wire.len() < published {
            fig.lost += published - on_wire.len();
            fig.notes.push(format!("{topic}: {} of {published} published messages on the wire", on_wire.len()));
            missing_on_wire(fig, db, &topic, &on_wire).await;
        }
        let mut msgs = Vec::new();
        for (partition, offset, payload, headers) in raw {
            let msg = codec.decode(kind, payload.as_deref()).await.ok();
            let event_id = headers.get("event_id").cloned().unwrap_or_default();
            msgs.push(WireMsg { partition, offset, event_id, msg });
        }
        wire.insert(kind, msgs);
    }
    // Duplicates on the wire (at-least-once relay: allowed, counted).
    for msgs in wire.values() {
        let distinct: HashSet<&str> = msgs.iter().map(|m| m.event_id.as_str()).collect();
        fig.wire_duplicates += msgs.len() - distinct.len();
    }
    // Per-order order per topic: first occurrences in outbox-id order.
    for (kind, msgs) in &wire {
        if kind.direction() != Direction::Out {
            continue;
        }
        let mut last: HashMap<(i32, i64), u64> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for m in msgs {
            if !seen.insert(m.event_id.as_str()) {
                continue;
            }
            let (Some(msg), Some(id)) = (&m.msg, outbox_ids.get(&m.event_id)) else { continue };
            let k = (m.partition, msg.order_id());
            if last.get(&k).is_some_and(|prev| prev > id) {
                fig.out_of_order += 1;
                fig.notes.push(format!("{kind}: order {} out of outbox order", msg.order_id()));
            }
            last.insert(k, *id);
        }
        // An order's messages on one topic share a partition.
        let mut part: HashMap<i64, i32> = HashMap::new();
        for m in msgs {
            if let Some(msg) = &m.msg
                && *part.entry(msg.order_id()).or_insert(m.partition) != m.partition
            {
                fig.out_of_order += 1;
                fig.notes.push(format!("{kind}: order {} on two partitions", msg.order_id()));
            }
        }
    }
    // Double effects: one logical command, one command id.
    let ids_of = |kind: MessageKind| -> HashMap<i64, HashSet<String>> {
        let mut m: HashMap<i64, HashSet<String>> = HashMap::new();
        for w in &wire[&kind] {
            let cmd = match &w.msg {
                Some(Message::InventoryReserve(c)) => c.command_id.clone(),
                Some(Message::InventoryRelease(c)) => c.command_id.clone(),
                Some(Message::PaymentAuthorize(c)) => c.command_id.clone(),
                Some(Message::PaymentVoid(c)) => c.command_id.clone(),
                _ => continue,
            };
            if let Some(msg) = &w.msg {
                m.entry(msg.order_id()).or_default().insert(cmd);
            }
        }
        m
    };
    // When each order's payment was first authorized (the participant's
    // occurred_at, µs): what "answered in time" is judged by.
    let mut authorized_at: HashMap<u64, i64> = HashMap::new();
    for w in &wire[&MessageKind::PaymentAuthorized] {
        if let Some(Message::PaymentAuthorized(a)) = &w.msg
            && !w.event_id.starts_with("stale-")
            && !w.event_id.starts_with("mismatch-")
        {
            let t = authorized_at.entry(a.order_id as u64).or_insert(i64::MAX);
            *t = (*t).min(a.occurred_at.0);
        }
    }
    // A payment authorized after the order was cancelled is voided again
    // (LATE_PAYMENT): its second void is the definition's answer, not a double effect.
    let late_payments: HashSet<u64> =
        sqlx::query_scalar::<_, u64>("SELECT DISTINCT order_id FROM saga_transitions WHERE reason = 'LATE_PAYMENT'")
            .fetch_all(&db.pool)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
    let (reserves, releases) = (ids_of(MessageKind::InventoryReserve), ids_of(MessageKind::InventoryRelease));
    let (auths, voids) = (ids_of(MessageKind::PaymentAuthorize), ids_of(MessageKind::PaymentVoid));
    for id in orders.keys() {
        let late = late_payments.contains(id);
        let id = *id as i64;
        let n = |m: &HashMap<i64, HashSet<String>>| m.get(&id).map_or(0, HashSet::len);
        let voids_allowed = if late { 2 } else { 1 };
        let problems = [
            (n(&reserves) > 1, "two reserve command ids"),
            (n(&auths) > 1, "two authorize command ids"),
            (n(&releases) > n(&reserves), "a release without a reserve"),
            (n(&voids) > n(&auths) * voids_allowed, "a void without an authorization"),
            (n(&releases) > 1, "two release command ids"),
            (n(&voids) > voids_allowed, "two void command ids"),
        ];
        for (bad, what) in problems {
            if bad {
                fig.double_effects += 1;
                fig.notes.push(format!("order {id}: {what}"));
            }
        }
    }
    // No stalled partition: every decodable inbound message reaches the inbox.
    // The participants may still be answering (a late authorization of an
    // order the timeout cancelled comes after "settled"), and the inbox was
    // read before the wire: each message gets a deadline to be applied.
    let mut inbox = inbox;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<(MessageKind, &WireMsg)> = wire
            .iter()
            .filter(|(kind, _)| kind.direction() == Direction::In)
            .flat_map(|(kind, msgs)| msgs.iter().map(move |m| (*kind, m)))
            .filter(|(_, m)| {
                m.msg.is_some() && !inbox.contains(&order_saga::store::limits::storable_event_id(&m.event_id))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for (kind, m) in missing {
                fig.stalled_partitions += 1;
                fig.notes.push(format!(
                    "{kind} {} (partition {}, offset {}) not applied within 30 s",
                    m.event_id, m.partition, m.offset
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        inbox = sqlx::query_scalar::<_, String>("SELECT event_id FROM saga_inbox")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    }
    authorized_at
}
