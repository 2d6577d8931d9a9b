//! Shared pieces of the benchmarks: database setup, latency statistics, the
//! MariaDB commit ceiling.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use order_saga::store::Db;

/// Server URL without a database, as `scripts/dev env` prints it.
pub fn db_base() -> String {
    std::env::var("ORDER_SAGA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://order_saga:order_saga@127.0.0.1:3306".into())
        .trim_end_matches('/')
        .to_owned()
}

pub async fn fresh_db(tag: &str, max_connections: u32) -> (Db, String) {
    let name = format!("order_saga_bench_{tag}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let admin =
        Db::connect(&db_base(), 2, Duration::from_secs(10)).await.expect("database server (run scripts/dev up)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`"))).execute(&admin.pool).await.unwrap();
    let url = format!("{}/{name}", db_base());
    let db = Db::connect(&url, max_connections, Duration::from_secs(30)).await.unwrap();
    db.migrate().await.unwrap();
    (db, url)
}

pub async fn drop_db(db: &Db, url: &str) {
    let name = url.rsplit('/').next().unwrap().to_owned();
    db.pool.close().await;
    let admin = Db::connect(&db_base(), 2, Duration::from_secs(10)).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`"))).execute(&admin.pool).await;
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub count: usize,
    pub errors: usize,
    pub secs: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(mut lat_ms: Vec<f64>, errors: usize, secs: f64) -> Stats {
        lat_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q =
            |p: f64| if lat_ms.is_empty() { 0.0 } else { lat_ms[((lat_ms.len() as f64 - 1.0) * p).round() as usize] };
        Stats { count: lat_ms.len(), errors, secs, p50: q(0.50), p95: q(0.95), p99: q(0.99), max: q(1.0) }
    }

    pub fn rate(&self) -> f64 {
        self.count as f64 / self.secs
    }
}

/// Runs `op` from `concurrency` tasks for `dur`; returns latencies.
pub async fn load<F, Fut>(concurrency: usize, dur: Duration, op: F) -> Stats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + dur;
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (op, seq) = (op.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t = Instant::now();
                if op(n).await {
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    Stats::of(all, errors, start.elapsed().as_secs_f64())
}

/// The durable-commit ceiling of the database: single-row autocommit
/// INSERTs from `concurrency` connections.
pub async fn commit_ceiling(concurrency: usize, dur: Duration) -> Stats {
    let (db, url) = fresh_db("commit", concurrency as u32 + 2).await;
    sqlx::query(
        "CREATE TABLE commit_probe (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64) NOT NULL) ENGINE=InnoDB",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let pool = db.pool.clone();
    let stats = load(concurrency, dur, move |n| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO commit_probe (v) VALUES (?)").bind(n.to_string()).execute(&pool).await.is_ok()
        }
    })
    .await;
    drop_db(&db, &url).await;
    stats
}

pub async fn server_settings(db: &Db) -> String {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version', 'innodb_flush_log_at_trx_commit', 'sync_binlog', 'log_bin', 'innodb_buffer_pool_size', 'innodb_log_file_size')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

pub fn header(title: &str) {
    println!("\n### {title}\n");
    println!("| concurrency | ops/s | p50 ms | p95 ms | p99 ms | max ms | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
}

pub fn row(c: usize, s: &Stats) {
    println!("| {c} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |", s.rate(), s.p50, s.p95, s.p99, s.max, s.errors);
}
