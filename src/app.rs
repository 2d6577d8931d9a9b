//! The composition root: builds every component from the configuration, runs
//! the command, and owns the shutdown order.
//!
//! Shutdown (SIGTERM/SIGINT), all within `ORDER_SAGA_SHUTDOWN_GRACE`:
//! 1. stop consuming — partition workers finish their current batch, offsets
//!    are stored and committed, the consumer leaves the group;
//! 2. stop the scheduler and the HTTP server (in-flight requests finish);
//! 3. the relay publishes what those last transactions wrote, flushes the
//!    producer and gives its shard leases back;
//! 4. close the database pool.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::store::outbox::RelayWakeup;
use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, SagasCommand, TimeoutsCommand, TopicsCommand};
use crate::codec::Codec;
use crate::config::Config;
use crate::contracts::{Direction, MessageKind};
use crate::http::{self, AppState};
use crate::kafka::consumer::{ConsumerSettings, SagaConsumer};
use crate::kafka::inbound::{EventHandler, GroupCommit, GroupLimits};
use crate::kafka::producer::Producer;
use crate::kafka::{ClientSettings, admin};
use crate::orchestrator::SagaStore;
use crate::outbox::rest::RestTransport;
use crate::outbox::{Relay, RelaySettings};
use crate::saga::Catalog;
use crate::store::outbox::OutboxWriter;
use crate::store::{Db, inbox, orders, outbox as outbox_table};
use crate::telemetry::metrics::Metrics;
use crate::{ops, telemetry, timers};

/// Runs the CLI; the exit code is the process's.
pub fn main(cli: Cli) -> ExitCode {
    // Declared first so it is dropped last: dropping it flushes the span exporter.
    let _telemetry = telemetry::init(
        cli.config.telemetry.log_format,
        &cli.config.telemetry.log,
        cli.config.telemetry.otlp_endpoint.as_deref(),
        &cli.config.telemetry.service_name,
    );
    if std::env::var_os(crate::failpoint::ENV).is_some() {
        tracing::warn!("crash-test failpoints are armed ({}); never do this in production", crate::failpoint::ENV);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("order-saga: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Do not wait for stray blocking tasks (e.g. a consumer close stuck on a dead broker).
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "order-saga failed");
            eprintln!("order-saga: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = cli.config;
    match cli.command {
        Command::Serve => serve(cfg).await,
        Command::Migrate => {
            cfg.validate(false)?;
            let db = connect(&cfg).await?;
            db.migrate().await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Sagas { command: SagasCommand::Preview { new, format, sample } } => {
            cfg.validate(false)?;
            let catalog = load_catalog(&cfg)?;
            crate::saga_files::cli::preview(&catalog, connect(&cfg), &new, &format, sample).await
        }
        Command::Sagas { command } => {
            crate::saga_files::cli::run(&cfg.sagas.sagas_dir, &cfg.timer_overrides()?, command)
        }
        Command::Timeouts { command: TimeoutsCommand::Sweep } => {
            cfg.validate(false)?;
            let catalog = load_catalog(&cfg)?;
            let db = connect(&cfg).await?;
            let sagas = SagaStore::new(catalog, outbox_writer(&cfg)?);
            let report = timers::sweep(&db, &sagas, cfg.sagas.sweep_batch, &timer_policy(&cfg)?, None).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics { command: TopicsCommand::Create { partitions, replication } } => {
            let brokers = cfg.kafka_brokers()?;
            let topics = cfg.topics()?;
            admin::create_topics(&ClientSettings::from_config(&cfg, brokers), &topics.all(), partitions, replication)
                .await?;
            println!("{} topics ready", topics.all().len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ops(args) => {
            cfg.validate(false)?;
            let catalog = load_catalog(&cfg)?;
            let sagas = crate::orchestrator::SagaStore::new(catalog, outbox_writer(&cfg)?);
            let ops = ops::Ops::new(connect(&cfg).await?, sagas, None, None);
            ops::cli::run(ops, cfg.ops.ops_bulk_rate, args).await
        }
        Command::Simulate(args) => crate::devtools::simulator::run(&cfg, args, shutdown_signal()).await,
        #[cfg(feature = "dev-registry")]
        Command::DevRegistry { addr } => {
            crate::devtools::registry::serve(addr, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn connect(cfg: &Config) -> anyhow::Result<Db> {
    crate::store::set_deadline(cfg.database.database_deadline);
    if let Some(w) = database_tls_warning(cfg.database_url()?) {
        tracing::warn!("{w}");
    }
    Db::connect(cfg.database_url()?, cfg.database.database_max_connections, cfg.database.database_acquire_timeout)
        .await
        .context("cannot connect to the database (check ORDER_SAGA_DATABASE_URL)")
}

pub fn load_catalog(cfg: &Config) -> anyhow::Result<Arc<Catalog>> {
    let catalog = crate::saga_files::load_catalog(&cfg.sagas.sagas_dir, &cfg.timer_overrides()?)
        .map_err(|e| anyhow::anyhow!("invalid saga definitions in {}:\n{e}", cfg.sagas.sagas_dir.display()))?;
    Ok(Arc::new(catalog))
}

pub fn outbox_writer(cfg: &Config) -> anyhow::Result<OutboxWriter> {
    Ok(OutboxWriter { topics: cfg.topics()?, shards: cfg.outbox.outbox_shards })
}

/// Registers the schemas of published messages and verifies consumed ones,
/// retrying for a while when the registry is not up yet.
pub async fn prepare_schemas(cfg: &Config, codec: &Codec) -> anyhow::Result<()> {
    let topics = cfg.topics()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for &kind in MessageKind::ALL {
        let topic = topics.of(kind);
        loop {
            let r = match kind.direction() {
                Direction::Out if cfg.registry.schema_registry_auto_register => codec.register(kind, topic).await.map(|_| ()),
                _ => codec.verify_readable(kind, topic).await.map(|found| {
                    if !found {
                        tracing::info!(subject = %crate::codec::value_subject(topic), "subject not registered yet; its producer will register it");
                    }
                }),
            };
            match r {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() < deadline && e.is_retriable() => {
                    tracing::warn!(error = %e, "schema registry not ready; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e).context("schema registration at startup"),
            }
        }
    }
    Ok(())
}

/// How due timers are judged, from `ORDER_SAGA_TIMER_*` and the topic map.
pub fn timer_policy(cfg: &Config) -> anyhow::Result<timers::TimerPolicy> {
    let topics = cfg.topics()?;
    Ok(timers::TimerPolicy {
        event_time: cfg.sagas.timer_event_time,
        allowed_lateness: cfg.sagas.timer_allowed_lateness,
        max_defer: cfg.sagas.timer_max_defer,
        topics: MessageKind::all_where(|r| r == crate::contracts::Role::Reply)
            .map(|k| (k, topics.of(k).to_owned()))
            .collect(),
    })
}

fn relay_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn serve(cfg: Config) -> anyhow::Result<ExitCode> {
    let grace = cfg.shutdown_grace;
    let running = start(cfg).await?;
    shutdown_signal().await;
    tracing::info!(grace_s = grace.as_secs_f64(), "shutdown requested");
    Ok(if running.shutdown().await { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A running daemon: everything `serve` runs, and what its orderly shutdown stops.
pub struct Running {
    pub state: AppState,
    pub addr: std::net::SocketAddr,
    grace: Duration,
    stop_intake: CancellationToken,
    stop_relay: CancellationToken,
    consumer: SagaConsumer,
    scheduler: JobScheduler,
    http_task: tokio::task::JoinHandle<()>,
    relay_task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The orderly shutdown (see the module docs). `false` when it did not
    /// finish within the grace period.
    pub async fn shutdown(self) -> bool {
        let started = tokio::time::Instant::now();
        let Running { state, stop_intake, stop_relay, consumer, scheduler, http_task, relay_task, grace, .. } = self;
        // The intake (consumer, scheduler, HTTP) gets most of the grace, but
        // never all of it: the relay's final settle and flush always get
        // their share, even when the database is down and a worker is stuck
        // waiting for it.
        let intake_budget = grace.mul_f64(0.7);
        let orderly = async move {
            stop_intake.cancel();
            let intake = async {
                if let Err(e) = consumer.join().await {
                    tracing::warn!(error = %e, "consumer stopped with an error");
                }
                let mut scheduler = scheduler;
                let _ = scheduler.shutdown().await;
                let _ = http_task.await;
            };
            if tokio::time::timeout(intake_budget, intake).await.is_err() {
                tracing::warn!("the intake did not stop within its share of the grace; stopping the relay anyway");
            }
            stop_relay.cancel();
            if let Some(t) = relay_task {
                let _ = t.await;
            }
            state.db.pool.close().await;
        };
        match tokio::time::timeout(grace, orderly).await {
            Ok(()) => {
                tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "shutdown complete");
                true
            }
            Err(_) => {
                tracing::error!(
                    "shutdown did not finish within ORDER_SAGA_SHUTDOWN_GRACE; exiting anyway (uncommitted work is redelivered)"
                );
                false
            }
        }
    }
}

/// The partitioner of published messages: with a `tenant_region` strategy,
/// the region map is checked against the real partition count of every topic
/// it applies to (a clear error naming topic and region otherwise).
pub async fn partitioner(cfg: &Config) -> anyhow::Result<crate::partitioning::Partitioner> {
    use crate::partitioning::{Audience, Partitioner, Strategy, audience};
    let topics = cfg.topics()?;
    let mut regional: Vec<&str> = Vec::new();
    for &kind in MessageKind::ALL.iter().filter(|k| k.direction() == crate::contracts::Direction::Out) {
        let strategy = match audience(kind) {
            Audience::Events => cfg.partitioning.partitioning,
            Audience::Commands => cfg.partitioning.command_partitioning,
        };
        if strategy == Strategy::TenantRegion {
            regional.push(topics.of(kind));
        }
    }
    if cfg.partitioning.partitioning == Strategy::TenantRegion {
        regional.push(&topics.dlq);
    }
    let counts = if regional.is_empty() {
        Default::default()
    } else {
        let client = ClientSettings::from_config(cfg, cfg.kafka_brokers()?);
        match crate::kafka::admin::partition_counts(&client, &regional).await {
            Ok(c) => c,
            // The daemon still takes orders (the outbox keeps them); the relay
            // learns the counts, and checks the map, before it publishes.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the topics' partition counts now; ORDER_SAGA_REGION_PARTITIONS is checked when the broker answers");
                Default::default()
            }
        }
    };
    let p = Partitioner::new(
        cfg.partitioning.partitioning,
        cfg.partitioning.command_partitioning,
        cfg.region_map()?,
        counts,
    )
    .map_err(|e| anyhow::anyhow!("ORDER_SAGA_REGION_PARTITIONS: {e}"))?;
    let shared = p.fully_owned_topics();
    if !shared.is_empty() {
        tracing::warn!(topics = ?shared, "every partition of these topics belongs to a mapped region: unmapped regions share them, and a regional consumer reads their events too");
    }
    Ok(p)
}

/// Refuses a configuration in which a redelivery can outlive the inbox (see
/// `ORDER_SAGA_INBOX_RETENTION`). Brokers that cannot describe topic
/// configurations get a warning: the check cannot be made there.
async fn check_inbox_retention(cfg: &Config) -> anyhow::Result<()> {
    let topics = cfg.topics()?;
    let client = ClientSettings::from_config(cfg, cfg.kafka_brokers()?);
    match crate::kafka::admin::retention_ms(&client, &topics.inbound()).await {
        Ok(retention) => {
            let unknown: Vec<&str> = retention.iter().filter(|(_, r)| r.is_none()).map(|(t, _)| t.as_str()).collect();
            if !unknown.is_empty() {
                tracing::warn!(topics = ?unknown, "the broker does not report retention.ms for these topics; the inbox retention is not verified against them");
            }
            let bad = crate::kafka::admin::unsafe_for_inbox(&retention, cfg.consumer.inbox_retention);
            if !bad.is_empty() {
                anyhow::bail!(
                    "ORDER_SAGA_INBOX_RETENTION ({}) does not outlive the retention of {}: an event redelivered after \
                     the inbox forgot it would be applied twice. Raise ORDER_SAGA_INBOX_RETENTION above the topics' \
                     retention.ms, or lower that.",
                    humantime::format_duration(cfg.consumer.inbox_retention),
                    bad.join(", ")
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the inbound topics' retention; the inbox retention is not verified")
        }
    }
    Ok(())
}

/// Builds and starts every component of `serve`.
/// What every face of the daemon shares, wired from one [`Config`] over a
/// connected database and a loaded catalog: the HTTP state (group commit of
/// `POST /orders`, the ops surface) and the saga shell. [`start`] adds the
/// broker-facing parts; the in-process test harness and the HTTP benchmark
/// use it as it is, so they exercise the wiring users run.
pub struct Services {
    pub state: AppState,
    pub sagas: SagaStore,
    pub metrics: Metrics,
    /// Wakes the outbox relay when a commit wrote rows.
    pub wakeup: Arc<RelayWakeup>,
    pub policy: timers::TimerPolicy,
}

/// Builds the [`Services`] (spawns the group-commit task: call inside a runtime).
pub fn services(cfg: &Config, db: Db, catalog: Arc<Catalog>) -> anyhow::Result<Services> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry).with_regions(&cfg.telemetry.metric_regions);
    let writer = outbox_writer(cfg)?;
    let sagas = SagaStore::new(catalog, writer.clone());
    let wakeup = Arc::new(RelayWakeup::default());
    let policy = timer_policy(cfg)?;
    let group_metrics = metrics.clone();
    let orders = crate::orchestrator::group_commit::CreateBatcher::spawn(
        crate::orchestrator::group_commit::Shared {
            db: db.clone(),
            outbox: writer.clone(),
            sagas: Some(sagas.clone()),
            actor: "api",
        },
        cfg.http.order_group_commit_max,
        cfg.http.order_group_commit_in_flight,
        move |n| group_metrics.orders.order_group_commit_size.observe(n as f64),
    );
    let oidc = cfg.oidc_settings()?.map(crate::auth::oidc::OidcClient::new).transpose()?.map(Arc::new);
    let state = AppState {
        orders,
        db,
        outbox: writer,
        sagas: Some(sagas.clone()),
        metrics: metrics.clone(),
        registry: Arc::new(registry),
        relay_wakeup: wakeup.clone(),
        hsts: cfg.http.http_tls_cert.is_some(),
        limiter: (cfg.http.http_rate_limit > 0).then(|| {
            let rate = cfg.http.http_rate_limit;
            Arc::new(http::limit::RateLimiter::new(rate, cfg.http.http_rate_burst.unwrap_or(rate)))
        }),
        auth: cfg.auth_settings()?.map(crate::auth::JwtVerifier::new).transpose()?.map(Arc::new),
        ops: (cfg.ops.ops_token.is_some()
            || !cfg.ops.ops_credentials.is_empty()
            || cfg.auth.auth_jwks_url.is_some()
            || oidc.is_some())
        .then(|| http::ops::OpsConfig {
            token: cfg.ops.ops_token.as_ref().map(|t| t.expose().to_owned()),
            credentials: cfg.ops.ops_credentials.clone(),
            oidc: oidc.clone(),
            bulk_rate: cfg.ops.ops_bulk_rate,
            sweep_batch: cfg.sagas.sweep_batch,
            timer_policy: Arc::new(policy.clone()),
            jobs: crate::ops::Jobs::default(),
        }),
        max_body_bytes: cfg.http.http_max_body_bytes,
        request_timeout: cfg.http.http_request_timeout,
    };
    Ok(Services { state, sagas, metrics, wakeup, policy })
}

/// The codec, with the registry's credentials and CA when configured.
pub fn codec(cfg: &Config) -> anyhow::Result<Codec> {
    let r = &cfg.registry;
    let ca_pem = match &r.schema_registry_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read {} (ORDER_SAGA_SCHEMA_REGISTRY_CA)", path.display()))?,
        ),
        None => None,
    };
    let basic = match (&r.schema_registry_username, &r.schema_registry_password) {
        (Some(u), Some(p)) => Some((u.clone(), p.expose().to_owned())),
        _ => None,
    };
    let access = crate::codec::RegistryAccess { basic, ca_pem };
    Ok(Codec::with_access(
        cfg.schema_registry_url()?,
        r.schema_registry_timeout,
        r.schema_registry_auto_register,
        access,
    )?)
}

/// Warns when the database URL does not verify the server it talks to: a
/// non-loopback host without `ssl-mode=VERIFY_CA` or `VERIFY_IDENTITY` sends
/// the password and every order to whoever is on the path.
pub fn database_tls_warning(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || parsed.scheme() == "unix" {
        return None;
    }
    let mode = parsed
        .query_pairs()
        .find(|(k, _)| k.eq_ignore_ascii_case("ssl-mode") || k.eq_ignore_ascii_case("sslmode"))
        .map(|(_, v)| v.to_ascii_uppercase().replace('-', "_"));
    match mode.as_deref() {
        Some("VERIFY_CA" | "VERIFY_IDENTITY") => None,
        other => Some(format!(
            "the database connection to {host} does not verify the server (ssl-mode={}): set \
             ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/to/ca.pem in ORDER_SAGA_DATABASE_URL",
            other.unwrap_or("PREFERRED, the default")
        )),
    }
}

/// How the HTTP listener serves (TLS, limits), from the configuration.
pub fn serve_settings(cfg: &Config) -> http::server::ServeSettings {
    let h = &cfg.http;
    http::server::ServeSettings {
        header_read_timeout: h.http_header_read_timeout,
        max_connections: h.http_max_connections.max(1),
        tls: match (&h.http_tls_cert, &h.http_tls_key) {
            (Some(cert), Some(key)) => Some(http::server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: h.http_tls_client_ca.clone(),
            }),
            _ => None,
        },
        grace: cfg.shutdown_grace.mul_f64(0.5),
    }
}

/// Says at start who may call the orders API, and fetches the issuer's keys
/// (a wrong JWKS URL shows now; requests fetch again if this fails).
async fn announce_auth(state: &AppState) {
    match &state.auth {
        None => tracing::warn!(
            "the orders API accepts every caller and records the actor they claim: set ORDER_SAGA_AUTH_JWKS_URL, \
             ORDER_SAGA_AUTH_ISSUER and ORDER_SAGA_AUTH_AUDIENCE to require bearer tokens (or keep it behind an \
             authenticating gateway, knowingly)"
        ),
        Some(v) => match v.refresh().await {
            Ok(keys) => tracing::info!(issuer = %v.settings().issuer, keys, "the orders API requires bearer tokens"),
            Err(e) => tracing::warn!(error = %e, issuer = %v.settings().issuer,
                "the orders API requires bearer tokens, but the issuer's keys cannot be fetched yet; requests answer 503 until they can"),
        },
    }
}

/// The consumer's batch handler, as `serve` runs it.
pub fn event_handler(
    cfg: &Config,
    db: &Db,
    sagas: &SagaStore,
    codec: &Codec,
    metrics: &Metrics,
    wakeup: &Arc<RelayWakeup>,
) -> anyhow::Result<EventHandler> {
    Ok(EventHandler {
        db: db.clone(),
        sagas: sagas.clone(),
        codec: codec.clone(),
        topics: cfg.topics()?,
        metrics: metrics.clone(),
        relay_wakeup: wakeup.clone(),
        version_patience: cfg.consumer.unknown_version_patience,
        group_commit: GroupCommit::spawn(db, sagas, metrics, consumer_group_limits(cfg)),
    })
}

/// The consumer's group commit bounds (`ORDER_SAGA_CONSUMER_GROUP_COMMIT_*`).
pub fn consumer_group_limits(cfg: &Config) -> GroupLimits {
    GroupLimits {
        max_runs: cfg.consumer.consumer_group_commit_max,
        max_events: cfg.consumer.consumer_batch_max,
        in_flight: cfg.consumer.consumer_group_commit_in_flight,
        linger: cfg.consumer.consumer_group_commit_linger,
    }
}

/// The saga consumer's settings, as `serve` runs it.
pub fn consumer_settings(cfg: &Config, client: &ClientSettings) -> anyhow::Result<ConsumerSettings> {
    Ok(ConsumerSettings {
        client: client.clone(),
        group_id: cfg.kafka.kafka_group_id.clone(),
        topics: cfg.topics()?.inbound().into_iter().map(str::to_owned).collect(),
        session_timeout: cfg.kafka.kafka_session_timeout,
        fetch_wait_max: cfg.kafka.kafka_fetch_wait_max,
        batch_max: cfg.consumer.consumer_batch_max,
        queue_capacity: cfg.consumer.consumer_batch_max * 4,
        drain_timeout: cfg.shutdown_grace.mul_f64(0.5),
    })
}

pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    cfg.validate(true)?;
    let catalog = load_catalog(&cfg)?;
    let db = connect(&cfg).await?;
    if cfg.database.migrate_on_start {
        db.migrate().await.context("applying migrations")?;
    }
    // A definition version may leave the sagas directory only once no saga
    // in flight uses it.
    if let Some(why) = catalog.retired_in_use(&crate::store::inspect::in_flight_by_version(&db).await?) {
        anyhow::bail!("{why}");
    }
    let codec = codec(&cfg)?;
    prepare_schemas(&cfg, &codec).await?;
    check_inbox_retention(&cfg).await?;
    // Validated even when a CDC pipeline publishes: the map is a contract.
    let partitioner = Arc::new(partitioner(&cfg).await?);

    let Services { state, sagas, metrics, wakeup, policy } = services(&cfg, db.clone(), catalog.clone())?;
    announce_auth(&state).await;

    let stop_intake = CancellationToken::new();
    let stop_relay = CancellationToken::new();
    let brokers = cfg.kafka_brokers()?;
    let client = ClientSettings::from_config(&cfg, brokers);
    if let Some(w) = client.cleartext_password_warning() {
        tracing::warn!("{w}");
    }

    // Outbox relay.
    let relay_task = if cfg.outbox.outbox_relay {
        let (pc, delivery) = (client.clone(), cfg.kafka.kafka_delivery_timeout);
        let new_producer: crate::outbox::ProducerFactory = Arc::new(move || Producer::new(&pc, delivery));
        let rest = match (&cfg.rest.rest_inventory_url, &cfg.rest.rest_payment_url) {
            (Some(i), Some(p)) => Some(RestTransport::new(i, p, cfg.rest.rest_timeout).map_err(anyhow::Error::msg)?),
            _ => None,
        };
        let relay = Relay::new(
            db.clone(),
            codec.clone(),
            new_producer,
            rest,
            RelaySettings {
                owner: relay_owner(),
                shards: cfg.outbox.outbox_shards,
                batch: cfg.outbox.outbox_batch,
                poll_interval: cfg.outbox.outbox_poll_interval,
                lease_ttl: cfg.outbox.outbox_lease_ttl,
                rest_mode: cfg.rest.rest_mode,
                rest_fallback_after: cfg.rest.rest_fallback_after,
            },
            wakeup.clone(),
            metrics.clone(),
        )?
        .with_partitioner(partitioner.clone());
        Some(tokio::spawn(relay.run(stop_relay.clone())))
    } else {
        tracing::info!("outbox relay disabled (ORDER_SAGA_OUTBOX_RELAY=false): a CDC pipeline publishes the outbox");
        None
    };

    // Saga consumer.
    let handler = Arc::new(event_handler(&cfg, &db, &sagas, &codec, &metrics, &wakeup)?);
    let consumer =
        SagaConsumer::start(consumer_settings(&cfg, &client)?, handler, Some(metrics.clone()), stop_intake.clone())?;
    // Event-time watermarks of what the consumer has applied, for every sweeper.
    if policy.event_time {
        tokio::spawn(crate::event_time::report(consumer.watermark_probe(), db.clone(), stop_intake.clone()));
    }

    // Scheduled jobs.
    let scheduler = start_scheduler(&cfg, &db, &sagas, &metrics, &wakeup).await?;

    // Bulk jobs whose runner stopped (a crash, a restart): taken over here.
    if let Some(ops_cfg) = &state.ops {
        let ops = crate::ops::Ops {
            db: db.clone(),
            sagas: sagas.clone(),
            metrics: Some(metrics.clone()),
            relay_wakeup: Some(wakeup.clone()),
            jobs: ops_cfg.jobs.clone(),
        };
        tokio::spawn(crate::ops::supervise(ops, JOB_SUPERVISION_EVERY, stop_intake.clone()));
    }

    // HTTP.
    let listener = tokio::net::TcpListener::bind(cfg.http.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (ORDER_SAGA_HTTP_ADDR)", cfg.http.http_addr))?;
    let addr = listener.local_addr()?;
    let tls = serve_settings(&cfg);
    tracing::info!(%addr, tls = tls.tls.is_some(), mtls = tls.tls.as_ref().is_some_and(|t| t.client_ca.is_some()), "order-saga serving");
    let (public, admin) = match cfg.http.ops_addr {
        None => (http::Surface::All, None),
        Some(a) => (http::Surface::Public, Some(a)),
    };
    let mut http_task = http::server::serve(
        listener,
        http::router_for(state.clone(), public),
        tls.clone(),
        metrics.orders.clone(),
        stop_intake.clone(),
    )
    .await?;
    if let Some(admin_addr) = admin {
        let listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot listen on {admin_addr} (ORDER_SAGA_OPS_ADDR)"))?;
        tracing::info!(addr = %listener.local_addr()?, "ops, console and metrics on their own listener");
        let admin_task = http::server::serve(
            listener,
            http::router_for(state.clone(), http::Surface::Admin),
            tls,
            metrics.orders.clone(),
            stop_intake.clone(),
        )
        .await?;
        let public_task = http_task;
        http_task = tokio::spawn(async move {
            let _ = tokio::join!(public_task, admin_task);
        });
    }
    Ok(Running {
        state,
        addr,
        grace: cfg.shutdown_grace,
        stop_intake,
        stop_relay,
        consumer,
        scheduler,
        http_task,
        relay_task,
    })
}

/// How often each replica looks for bulk jobs whose runner stopped.
const JOB_SUPERVISION_EVERY: Duration = Duration::from_secs(10);

async fn start_scheduler(
    cfg: &Config,
    db: &Db,
    sagas: &SagaStore,
    metrics: &Metrics,
    wakeup: &Arc<RelayWakeup>,
) -> anyhow::Result<JobScheduler> {
    let sched = JobScheduler::new().await.context("creating the scheduler")?;

    let (db1, sagas1, m1, w1, batch) =
        (db.clone(), sagas.clone(), metrics.clone(), wakeup.clone(), cfg.sagas.sweep_batch);
    let policy = Arc::new(timer_policy(cfg)?);
    // Overlapping runs are pointless; a slow sweep makes the next tick skip.
    let running = Arc::new(tokio::sync::Mutex::new(()));
    let sweep = Job::new_async(cfg.sagas.sweep_schedule.as_str(), move |_, _| {
        let (db, sagas, m, w, running, policy) =
            (db1.clone(), sagas1.clone(), m1.clone(), w1.clone(), running.clone(), policy.clone());
        Box::pin(async move {
            let Ok(_guard) = running.try_lock() else {
                return;
            };
            match timers::sweep(&db, &sagas, batch, &policy, Some(&m)).await {
                Ok(r) if r.fired > 0 => w.rows_committed_anywhere(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "timeout sweep failed; the next tick retries"),
            }
        })
    })
    .context("ORDER_SAGA_SWEEP_SCHEDULE")?;
    sched.add(sweep).await.context("scheduling the sweeper")?;

    let (db2, idem, outbox_ret, inbox_ret) =
        (db.clone(), cfg.http.idempotency_retention, cfg.outbox.outbox_retention, cfg.consumer.inbox_retention);
    let housekeeping = Job::new_async("0 */5 * * * *", move |_, _| {
        let db = db2.clone();
        Box::pin(async move {
            let now = chrono::Utc::now();
            let ago = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            let r = async {
                let a = orders::purge_idempotency_keys(&db, ago(idem)).await?;
                let b = outbox_table::purge_published(&db.pool, ago(outbox_ret)).await?;
                let c = inbox::purge(&db.pool, ago(inbox_ret)).await?;
                crate::store::jobs::purge(&db).await?;
                Ok::<_, crate::store::StoreError>((a, b, c))
            };
            match r.await {
                Ok((a, b, c)) => tracing::debug!(idempotency_keys = a, outbox_rows = b, inbox_rows = c, "housekeeping"),
                Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
            }
        })
    })
    .context("housekeeping schedule")?;
    sched.add(housekeeping).await.context("scheduling housekeeping")?;

    let (db3, sagas3, m3) = (db.clone(), sagas.clone(), metrics.clone());
    let gauges = Job::new_async("*/15 * * * * *", move |_, _| {
        let (db, sagas, m) = (db3.clone(), sagas3.clone(), m3.clone());
        Box::pin(async move {
            if let Err(e) = ops::refresh_gauges(&db, &sagas, &m).await {
                tracing::debug!(error = %e, "refreshing gauges failed");
            }
        })
    })
    .context("gauge schedule")?;
    sched.add(gauges).await.context("scheduling gauges")?;

    sched.start().await.context("starting the scheduler")?;
    Ok(sched)
}

#[cfg(test)]
mod tests {
    use super::database_tls_warning;

    #[test]
    fn a_remote_database_without_server_verification_is_warned_about() {
        let warned = |url: &str| database_tls_warning(url).is_some();
        assert!(warned("mysql://u:p@db.internal:3306/orders"));
        assert!(warned("mysql://u:p@db.internal:3306/orders?ssl-mode=REQUIRED"));
        assert!(!warned("mysql://u:p@db.internal:3306/orders?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem"));
        assert!(!warned("mysql://u:p@db.internal/orders?ssl-mode=verify_ca"));
        assert!(!warned("mysql://root@127.0.0.1:3306/orders"));
        assert!(!warned("mysql://root@localhost/orders"));
        let w = database_tls_warning("mysql://u:secret@db:3306/o").unwrap_or_default();
        assert!(!w.contains("secret"), "{w}");
    }
}
