//! What one load level cost, per saga: CPU time of every process on the box
//! (from /proc, the same run), the database's own counters (`SHOW GLOBAL
//! STATUS` deltas), and the broker's floor (produce → consume of the same
//! broker with nothing else running).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use order_saga::store::Db;

/// Statements the benchmark itself sends while it measures (progress polls),
/// subtracted from the server's statement count.
pub static OWN_STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// A process whose CPU time is charged to the sagas.
#[derive(Debug, Clone)]
pub struct Proc {
    pub name: &'static str,
    pub pid: u32,
}

/// The oldest process with this exact name (`pgrep -o -x`).
pub fn pid_of(name: &str) -> Option<u32> {
    let out = std::process::Command::new("pgrep").args(["-o", "-x", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of `pid` so far (all its threads).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields count from after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

/// CPU seconds of each process at one moment.
pub fn cpu_snapshot(procs: &[Proc]) -> Vec<f64> {
    procs.iter().map(|p| cpu_seconds(p.pid).unwrap_or(f64::NAN)).collect()
}

/// The whole box's CPU time so far, from the first line of `/proc/stat`:
/// (busy, iowait, steal, total) in ticks; busy counts user, nice, system, irq
/// and softirq. Steal is time the hypervisor gave to someone else: a VM that
/// "runs slower today" shows it here.
pub fn box_ticks() -> Option<[u64; 4]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let [user, nice, system, idle, iowait, irq, softirq, steal] = *f.get(..8)? else { return None };
    let busy = user + nice + system + irq + softirq;
    Some([busy, iowait, steal, busy + idle + iowait + steal])
}

/// The box over one window: busy, iowait and steal as % of all its CPU time.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoxUse {
    pub busy: f64,
    pub iowait: f64,
    pub steal: f64,
}

impl BoxUse {
    fn between(a: Option<[u64; 4]>, b: Option<[u64; 4]>) -> BoxUse {
        let (Some(a), Some(b)) = (a, b) else {
            return BoxUse { busy: f64::NAN, iowait: f64::NAN, steal: f64::NAN };
        };
        let total = (b[3] - a[3]).max(1) as f64;
        let pct = |i: usize| (b[i] - a[i]) as f64 * 100.0 / total;
        BoxUse { busy: pct(0), iowait: pct(1), steal: pct(2) }
    }
}

/// The server counters that say how much database work was done.
/// `Com_stmt_prepare` counts prepares, which `Questions` leaves out: a
/// statement text a connection has not cached costs one before it runs.
pub const DB_COUNTERS: [&str; 6] =
    ["Questions", "Com_commit", "Innodb_log_writes", "Innodb_data_fsyncs", "Com_select", "Com_stmt_prepare"];

pub async fn db_counters(db: &Db) -> Vec<f64> {
    let names: Vec<String> = DB_COUNTERS.iter().map(|n| format!("'{n}'")).collect();
    let sql = format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({})", names.join(", "));
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&db.pool).await.unwrap();
    DB_COUNTERS
        .iter()
        .map(|name| {
            rows.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(f64::NAN)
        })
        .collect()
}

/// Everything measured over one load level.
pub struct Window {
    cpu: Vec<f64>,
    db: Vec<f64>,
    own: u64,
    box_at: Option<[u64; 4]>,
    pub started: Instant,
}

impl Window {
    pub async fn open(db: &Db, procs: &[Proc]) -> Window {
        Window {
            cpu: cpu_snapshot(procs),
            db: db_counters(db).await,
            own: OWN_STATEMENTS.load(Ordering::Relaxed),
            box_at: box_ticks(),
            started: Instant::now(),
        }
    }

    /// (CPU ms per saga per process, DB counters per saga, the box's CPU use).
    pub async fn close(&self, db: &Db, procs: &[Proc], sagas: usize) -> (Vec<f64>, Vec<f64>, BoxUse) {
        let cpu = cpu_snapshot(procs);
        let box_use = BoxUse::between(self.box_at, box_ticks());
        let counters = db_counters(db).await;
        let own = (OWN_STATEMENTS.load(Ordering::Relaxed) - self.own) as f64 + 2.0; // + the two SHOW STATUS
        let n = sagas.max(1) as f64;
        let cpu_ms = cpu.iter().zip(&self.cpu).map(|(b, a)| (b - a) * 1e3 / n).collect();
        let mut per = counters.iter().zip(&self.db).map(|(b, a)| (b - a) / n).collect::<Vec<f64>>();
        per[0] -= own / n; // Questions
        per[4] -= own / n; // Com_select
        (cpu_ms, per, box_use)
    }
}

/// The broker's floor: one hop produce → consume (the daemon's producer
/// settings, the daemon's fetch wait) at `rate` messages/s for `dur`, with
/// nothing else running. Returns (p50, p99, max) in ms and the rate reached.
pub async fn broker_floor(
    client: &order_saga::kafka::ClientSettings,
    topic: &str,
    rate: u64,
    dur: Duration,
    fetch_wait: Duration,
) -> (f64, f64, f64, f64) {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let mut cfg = client.client_config();
    cfg.set("group.id", format!("floor-{}", uuid::Uuid::new_v4().simple()));
    // A fresh topic per call: everything on it is this call's.
    cfg.set("auto.offset.reset", "earliest");
    cfg.set("enable.auto.commit", "false");
    cfg.set("fetch.wait.max.ms", fetch_wait.as_millis().to_string());
    let consumer: BaseConsumer = cfg.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    // Joined and positioned before the first message.
    let joined = Instant::now();
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 && joined.elapsed() < Duration::from_secs(60) {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    for _ in 0..20 {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let total = rate * dur.as_secs();
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(total as usize);
        let deadline = Instant::now() + dur + Duration::from_secs(30);
        while (lat.len() as u64) < total && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let sent = m.payload().and_then(|p| p.get(..8)).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
                if let Some(sent) = sent.filter(|s| *s > 0) {
                    lat.push((now_micros() - sent) as f64 / 1e3);
                }
            }
        }
        lat
    });
    let producer = order_saga::kafka::producer::Producer::new(client, Duration::from_secs(30)).unwrap();
    // Connected, metadata known, idempotent producer id granted: as in the daemon after its first second.
    producer.enqueue(topic, b"warm-up", &[0u8; 8], &[]).await.unwrap().await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut acks = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let payload = now_micros().to_le_bytes();
        acks.push(producer.enqueue(topic, i.to_string().as_bytes(), &payload, &[]).await.unwrap());
    }
    let sent_rate = total as f64 / started.elapsed().as_secs_f64();
    for a in acks {
        let _ = a.await;
    }
    let mut lat = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() as f64 - 1.0) * p).round() as usize] };
    (q(0.5), q(0.99), q(1.0), sent_rate)
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
