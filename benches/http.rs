//! `POST /orders` throughput and latency against the local MariaDB, and the
//! database's own durable-commit ceiling in the same run.
//!
//!     scripts/dev up && cargo bench --bench http
//!
//! The router runs in-process on a loopback port with sagas on (as the daemon
//! runs it); the load generator shares the machine. The outbox relay is off:
//! this measures the ingress transaction, not publishing.

// A benchmark: failing loudly on setup problems is the right behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

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
    let secs: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let dur = Duration::from_secs(secs);
    let levels = [1usize, 8, 32, 64];
    let (db, url) = fresh_db("http", 40).await;
    println!("## POST /orders (each level {secs} s)\n\nMariaDB: {}", server_settings(&db).await);

    // The daemon's own wiring and option parsing: ORDER_SAGA_* variables
    // (group commit size and groups in flight, …) apply as they do to `serve`.
    let cfg = {
        use clap::Parser as _;
        order_saga::cli::Cli::try_parse_from(["order-saga", "serve"]).unwrap().config
    };
    let catalog =
        Arc::new(order_saga::saga_files::load_catalog(std::path::Path::new("sagas"), &Default::default()).unwrap());
    let state = order_saga::app::services(&cfg, db.clone(), catalog).unwrap().state;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The daemon's listener (header-read timeout, connection cap), as `serve` runs it.
    let metrics = state.metrics.orders.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    order_saga::http::server::serve(
        listener,
        order_saga::http::router(state),
        order_saga::app::serve_settings(&cfg),
        metrics,
        stop.clone(),
    )
    .await
    .unwrap();
    let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
    let body = serde_json::json!({
        "customer_id": "bench-customer",
        "tenant_region": "eu-west",
        "currency": "EUR",
        "items": [{"sku": "SKU-1", "qty": 2, "unit_price": "19.99"}, {"sku": "SKU-2", "qty": 1, "unit_price": "5.00"}]
    })
    .to_string();
    let run_id = uuid::Uuid::new_v4().simple().to_string();

    header("POST /orders (HTTP, sagas on)");
    for (i, &c) in levels.iter().enumerate() {
        let (client, body, run_id) = (client.clone(), body.clone(), run_id.clone());
        let url = format!("http://{addr}/orders");
        let stats = load(c, dur, move |n| {
            let (client, body, url) = (client.clone(), body.clone(), url.clone());
            let key = format!("{run_id}-{i}-{n}");
            async move {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", key)
                    .body(body)
                    .send()
                    .await;
                matches!(r, Ok(r) if r.status().as_u16() == 201)
            }
        })
        .await;
        row(c, &stats);
    }

    header("MariaDB durable-commit ceiling (single-row autocommit INSERT)");
    for &c in &levels {
        row(c, &commit_ceiling(c, dur).await);
    }
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&db.pool).await.unwrap();
    println!("\n{orders} orders created in this run.");
    drop_db(&db, &url).await;
}
