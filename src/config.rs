//! Configuration: one typed clap struct, from flags, `ORDER_SAGA_*` environment
//! variables, or a TOML file — in that order of precedence — validated before
//! anything starts.
//!
//! The TOML file (`--config` / `ORDER_SAGA_CONFIG`) uses the long option names
//! with `_` or `-` as keys (`database_url = "mysql://…"`). A key that is not an
//! option is an error, so a typo cannot silently fall back to a default.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, FromArgMatches, ValueEnum};

use crate::contracts::MessageKind;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 15s, 15m, 24h)"))
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}

/// Regions reported as metric label values by default (`ORDER_SAGA_METRIC_REGIONS`).
pub const DEFAULT_METRIC_REGIONS: &str = "eu-west,eu-central,us-east,us-west,ap-south,ap-southeast";

/// The largest consumer batch: the per-event rows of one batch must fit one
/// multi-row statement (`store::limits::ROWS_PER_STATEMENT`, checked there).
pub const CONSUMER_BATCH_MAX_LIMIT: usize = 1_000;

/// Every daemon option. Flattened into the CLI; `global` so options may follow the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TOML file with options (keys are the long option names). Flags and environment win over it.
    #[arg(long, global = true, env = "ORDER_SAGA_CONFIG")]
    pub config: Option<PathBuf>,

    /// MySQL/MariaDB URL, e.g. mysql://user:pass@db:3306/orders.
    #[arg(long, global = true, env = "ORDER_SAGA_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Maximum open database connections per process.
    #[arg(long, global = true, env = "ORDER_SAGA_DATABASE_MAX_CONNECTIONS", default_value_t = 24)]
    pub database_max_connections: u32,

    /// How long to wait for a database connection before failing a request.
    #[arg(long, global = true, env = "ORDER_SAGA_DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub database_acquire_timeout: Duration,

    /// Apply pending migrations when `serve` starts (replicas serialise on a
    /// database lock). Turn off when a deployment job runs `order-saga migrate`.
    #[arg(long, global = true, env = "ORDER_SAGA_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Address of the HTTP ingress (orders API, health, metrics, ops).
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Largest accepted request body; larger bodies get 413.
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub http_max_body_bytes: usize,

    /// Requests running longer than this are answered 503.
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http_request_timeout: Duration,

    /// Most `POST /orders` requests committed together in one transaction when they arrive while
    /// earlier ones commit (group commit; 1 = every order alone). Each keeps its own outcome.
    #[arg(long, global = true, env = "ORDER_SAGA_ORDER_GROUP_COMMIT_MAX", default_value_t = 8)]
    pub order_group_commit_max: usize,

    /// How long idempotency keys are kept; a key reused after that creates a new order.
    #[arg(long, global = true, env = "ORDER_SAGA_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = duration)]
    pub idempotency_retention: Duration,

    /// How long handled event ids are kept for de-duplication. Must be longer than the inbound
    /// topics' retention.ms (Kafka's default is 7 days): `serve` refuses to start otherwise, since an
    /// event redelivered after the inbox forgot it would be applied twice.
    #[arg(long, global = true, env = "ORDER_SAGA_INBOX_RETENTION", default_value = "8d", value_parser = duration)]
    pub inbox_retention: Duration,

    /// Kafka bootstrap servers, comma separated (host:port,…).
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Consumer group of the saga consumer. All replicas share it.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_GROUP_ID", default_value = "order-service-events")]
    pub kafka_group_id: String,

    /// How the partition of published domain events (order.created, order.status.changed,
    /// order.item.backordered, order.attention.required) and dead letters is chosen:
    /// `tenant_region` (from the order's region, see ORDER_SAGA_REGION_PARTITIONS) or `key`
    /// (the producer hashes the order id). The Kafka key is the order id either way.
    #[arg(long, global = true, env = "ORDER_SAGA_PARTITIONING", value_enum, default_value_t = crate::partitioning::Strategy::TenantRegion)]
    pub partitioning: crate::partitioning::Strategy,

    /// The same choice for commands to participants (inventory.*, payment.*): `key` by default,
    /// since participants de-duplicate by command id and gain nothing from regional placement.
    #[arg(long, global = true, env = "ORDER_SAGA_COMMAND_PARTITIONING", value_enum, default_value_t = crate::partitioning::Strategy::Key)]
    pub command_partitioning: crate::partitioning::Strategy,

    /// Partitions each region owns with the `tenant_region` strategy: REGION=FIRST-LAST,… e.g.
    /// "eu-west=0-3,us-east=4-7,ap-south=8". A region not listed gets one partition by a stable
    /// hash of its name over the partitions no region owns. Checked against every topic's real
    /// partition count at startup.
    #[arg(long, global = true, env = "ORDER_SAGA_REGION_PARTITIONS", default_value = "")]
    pub region_partitions: String,

    /// Prefix added to every topic name (e.g. "prod." → prod.order.created.v1).
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_TOPIC_PREFIX", default_value = "")]
    pub kafka_topic_prefix: String,

    /// Topic for a message, overriding prefix + message name: MESSAGE=TOPIC (repeatable;
    /// comma separated in the environment), e.g. payment.failed.v1=payments.failed.
    #[arg(long = "kafka-topic", global = true, env = "ORDER_SAGA_KAFKA_TOPICS", value_delimiter = ',', value_parser = key_value)]
    pub kafka_topics: Vec<(String, String)>,

    /// Dead-letter topic for poison messages (prefix applies).
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_DLQ_TOPIC", default_value = "order-saga.dlq")]
    pub kafka_dlq_topic: String,

    /// security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SECURITY_PROTOCOL", default_value = "plaintext")]
    pub kafka_security_protocol: String,

    /// SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) when a sasl_* protocol is used.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,

    /// SASL username.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,

    /// SASL password.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,

    /// CA certificate file for TLS to the brokers.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<PathBuf>,

    /// Extra librdkafka properties KEY=VALUE (repeatable; comma separated in the environment).
    /// Properties the daemon's correctness depends on cannot be overridden.
    #[arg(long = "kafka-property", global = true, env = "ORDER_SAGA_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = key_value)]
    pub kafka_properties: Vec<(String, String)>,

    /// How long the producer keeps retrying a message before the relay
    /// counts it as failed (and retries the row later).
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_DELIVERY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub kafka_delivery_timeout: Duration,

    /// Consumer session timeout (failure detection of a replica).
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SESSION_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub kafka_session_timeout: Duration,

    /// Longest a fetch waits for data on the broker (latency vs. request rate).
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_FETCH_WAIT_MAX", default_value = "50ms", value_parser = duration)]
    pub kafka_fetch_wait_max: Duration,

    /// How long the consumer waits (retrying) on an event for a saga of a definition version this
    /// replica has not loaded — a newer replica of a rolling deploy takes it — before quarantining it.
    #[arg(long, global = true, env = "ORDER_SAGA_UNKNOWN_VERSION_PATIENCE", default_value = "15m", value_parser = duration)]
    pub unknown_version_patience: Duration,

    /// Most events of one partition applied in one database transaction (1 to 1000; 1 = no batching).
    #[arg(long, global = true, env = "ORDER_SAGA_CONSUMER_BATCH_MAX", default_value_t = 200)]
    pub consumer_batch_max: usize,

    /// Confluent-compatible Schema Registry URL.
    #[arg(long, global = true, env = "ORDER_SAGA_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,

    /// Timeout of one Schema Registry request.
    #[arg(long, global = true, env = "ORDER_SAGA_SCHEMA_REGISTRY_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub schema_registry_timeout: Duration,

    /// Register the schemas of published messages at startup. Turn off where a CI
    /// pipeline owns registration; the daemon then only verifies.
    #[arg(long, global = true, env = "ORDER_SAGA_SCHEMA_REGISTRY_AUTO_REGISTER", default_value_t = true, action = clap::ArgAction::Set)]
    pub schema_registry_auto_register: bool,

    /// Directory with the saga definitions (*.toml).
    #[arg(long, global = true, env = "ORDER_SAGA_SAGAS_DIR", default_value = "sagas")]
    pub sagas_dir: PathBuf,

    /// Timer duration override TIMER=DURATION (repeatable), e.g. payment_timeout=15m.
    #[arg(long = "timer-override", global = true, env = "ORDER_SAGA_TIMERS", value_delimiter = ',', value_parser = key_value)]
    pub timers: Vec<(String, String)>,

    /// When the timeout sweeper runs (cron with seconds, UTC).
    #[arg(long, global = true, env = "ORDER_SAGA_SWEEP_SCHEDULE", default_value = "*/1 * * * * *")]
    pub sweep_schedule: String,

    /// Most timers fired per sweep transaction.
    #[arg(long, global = true, env = "ORDER_SAGA_SWEEP_BATCH", default_value_t = 100)]
    pub sweep_batch: u32,

    /// Publish the outbox to Kafka. Turn off when a CDC pipeline (Debezium) publishes the table.
    #[arg(long, global = true, env = "ORDER_SAGA_OUTBOX_RELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox_relay: bool,

    /// Outbox shards. Each shard has one active publisher across all replicas.
    /// Change only while the outbox is drained.
    #[arg(long, global = true, env = "ORDER_SAGA_OUTBOX_SHARDS", default_value_t = 16)]
    pub outbox_shards: u16,

    /// Most outbox rows published per round.
    #[arg(long, global = true, env = "ORDER_SAGA_OUTBOX_BATCH", default_value_t = 500)]
    pub outbox_batch: u32,

    /// How often the relay looks for rows written by other replicas when idle.
    #[arg(long, global = true, env = "ORDER_SAGA_OUTBOX_POLL_INTERVAL", default_value = "100ms", value_parser = duration)]
    pub outbox_poll_interval: Duration,

    /// Shard lease duration; a crashed replica's shards move after this long.
    #[arg(long, global = true, env = "ORDER_SAGA_OUTBOX_LEASE_TTL", default_value = "15s", value_parser = duration)]
    pub outbox_lease_ttl: Duration,

    /// How long published outbox rows are kept before deletion.
    #[arg(long, global = true, env = "ORDER_SAGA_OUTBOX_RETENTION", default_value = "1h", value_parser = duration)]
    pub outbox_retention: Duration,

    /// REST delivery of commands: off, fallback (when Kafka is unavailable) or always.
    #[arg(long, global = true, env = "ORDER_SAGA_REST_MODE", value_enum, default_value_t = RestMode::Off)]
    pub rest_mode: RestMode,

    /// Base URL of the inventory service (POST {url}/inventory/reserve and /inventory/release).
    #[arg(long, global = true, env = "ORDER_SAGA_REST_INVENTORY_URL")]
    pub rest_inventory_url: Option<String>,

    /// Base URL of the payment service (POST {url}/payments/intents and /payments/intents/void).
    #[arg(long, global = true, env = "ORDER_SAGA_REST_PAYMENT_URL")]
    pub rest_payment_url: Option<String>,

    /// In fallback mode: how long Kafka must fail before commands go over REST.
    #[arg(long, global = true, env = "ORDER_SAGA_REST_FALLBACK_AFTER", default_value = "10s", value_parser = duration)]
    pub rest_fallback_after: Duration,

    /// Timeout of one REST delivery.
    #[arg(long, global = true, env = "ORDER_SAGA_REST_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub rest_timeout: Duration,

    /// Tenant regions reported as metric label values; orders of any other region are counted
    /// as `other`, so clients cannot create unbounded series.
    #[arg(long = "metric-region", global = true, env = "ORDER_SAGA_METRIC_REGIONS", value_delimiter = ',',
          default_value = DEFAULT_METRIC_REGIONS)]
    pub metric_regions: Vec<String>,

    /// Bearer token for /ops endpoints. Without it the ops endpoints are disabled (404), not open.
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_TOKEN", hide_env_values = true)]
    pub ops_token: Option<String>,

    /// Most ops actions per second in a bulk action.
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_BULK_RATE", default_value_t = 50)]
    pub ops_bulk_rate: u32,

    /// Time allowed for a graceful shutdown (stop consuming, finish the batch, commit, flush).
    #[arg(long, global = true, env = "ORDER_SAGA_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Log format: json (production) or text (local runs).
    #[arg(long, global = true, env = "ORDER_SAGA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info or order_saga=debug,info.
    #[arg(long, global = true, env = "ORDER_SAGA_LOG", default_value = "info")]
    pub log: String,

    /// OTLP/HTTP endpoint for traces (e.g. http://otel-collector:4318). No export when unset.
    #[arg(long, global = true, env = "ORDER_SAGA_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Service name reported in traces.
    #[arg(long, global = true, env = "ORDER_SAGA_SERVICE_NAME", default_value = "order-saga")]
    pub service_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestMode {
    Off,
    Fallback,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// A configuration problem, worded for the person who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("config file {path}: unknown key {key:?} (keys are long option names, see --help)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: key {key:?} must be a string, number, boolean or array of those")]
    BadValue { path: PathBuf, key: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Parses `args` (including argv\[0\]) into the command line `C` (which
/// flattens [`Config`]), merging the TOML file named by
/// `--config`/`ORDER_SAGA_CONFIG` under flags and environment.
pub fn parse_with_file<C, I, T>(args: I) -> Result<C, ConfigError>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_with(C::command(), args)
}

/// [`parse_with_file`] with a prepared `cmd` (tests take the environment out).
pub fn parse_with<C, I, T>(cmd: clap::Command, args: I) -> Result<C, ConfigError>
where
    C: FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = cmd.clone().try_get_matches_from(&args)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(C::from_arg_matches(&matches)?);
    };
    let extra = file_args(&path, &cmd, &matches)?;
    // File values go right after argv[0]: they are only added for options
    // that flags and environment left at their defaults.
    let mut merged = Vec::with_capacity(args.len() + extra.len());
    merged.extend(args.first().cloned());
    merged.extend(extra);
    merged.extend(args.iter().skip(1).cloned());
    let matches = cmd.try_get_matches_from(merged)?;
    Ok(C::from_arg_matches(&matches)?)
}

fn file_args(path: &Path, cmd: &clap::Command, matches: &clap::ArgMatches) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.into(), source })?;
    let table: BTreeMap<String, toml::Value> =
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path: path.into(), message: e.to_string() })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && a.get_id() != "config")
            .ok_or_else(|| ConfigError::UnknownKey { path: path.into(), key: key.clone() })?;
        let id = arg.get_id().as_str();
        if matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            let s = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(ConfigError::BadValue { path: path.into(), key: key.clone() });
                }
            };
            out.push(OsString::from(format!("--{long}={s}")));
        }
    }
    Ok(out)
}

impl Config {
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
            ConfigError::Invalid(
                "no database configured: set ORDER_SAGA_DATABASE_URL (or --database-url), e.g. mysql://root@127.0.0.1:3306/order_saga".into(),
            )
        })
    }

    pub fn kafka_brokers(&self) -> Result<&str, ConfigError> {
        self.kafka_brokers.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
            ConfigError::Invalid(
                "no Kafka brokers configured: set ORDER_SAGA_KAFKA_BROKERS (or --kafka-brokers), e.g. 127.0.0.1:9092"
                    .into(),
            )
        })
    }

    pub fn schema_registry_url(&self) -> Result<&str, ConfigError> {
        self.schema_registry_url.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
            ConfigError::Invalid("no schema registry configured: set ORDER_SAGA_SCHEMA_REGISTRY_URL (or --schema-registry-url), e.g. http://127.0.0.1:8081".into())
        })
    }

    /// Checks everything that can be checked without connecting anywhere.
    /// `needs_kafka` is false for commands that only touch the database.
    /// The parsed ORDER_SAGA_REGION_PARTITIONS.
    pub fn region_map(&self) -> Result<crate::partitioning::RegionMap, ConfigError> {
        self.region_partitions.parse().map_err(|e| ConfigError::Invalid(format!("ORDER_SAGA_REGION_PARTITIONS: {e}")))
    }

    pub fn validate(&self, needs_kafka: bool) -> Result<(), ConfigError> {
        self.region_map()?;
        let url = self.database_url()?;
        if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
            return Err(ConfigError::Invalid(format!(
                "ORDER_SAGA_DATABASE_URL must start with mysql:// (found {:?})",
                url.split("://").next().unwrap_or_default()
            )));
        }
        if self.database_max_connections < 2 {
            return Err(ConfigError::Invalid("ORDER_SAGA_DATABASE_MAX_CONNECTIONS must be at least 2".into()));
        }
        if !(1..=1000).contains(&self.order_group_commit_max) {
            return Err(ConfigError::Invalid("ORDER_SAGA_ORDER_GROUP_COMMIT_MAX must be 1 to 1000".into()));
        }
        if self.http_max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("ORDER_SAGA_HTTP_MAX_BODY_BYTES must be at least 1024".into()));
        }
        if self.shutdown_grace.is_zero() {
            return Err(ConfigError::Invalid("ORDER_SAGA_SHUTDOWN_GRACE must be greater than zero".into()));
        }
        if self.idempotency_retention < Duration::from_secs(60) {
            return Err(ConfigError::Invalid("ORDER_SAGA_IDEMPOTENCY_RETENTION must be at least 1m".into()));
        }
        if !(1..=1024).contains(&self.outbox_shards) {
            return Err(ConfigError::Invalid("ORDER_SAGA_OUTBOX_SHARDS must be between 1 and 1024".into()));
        }
        if self.consumer_batch_max > CONSUMER_BATCH_MAX_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "ORDER_SAGA_CONSUMER_BATCH_MAX must be at most {CONSUMER_BATCH_MAX_LIMIT}"
            )));
        }
        if self.outbox_batch == 0 || self.sweep_batch == 0 || self.consumer_batch_max == 0 {
            return Err(ConfigError::Invalid(
                "ORDER_SAGA_OUTBOX_BATCH, ORDER_SAGA_SWEEP_BATCH and ORDER_SAGA_CONSUMER_BATCH_MAX must be at least 1"
                    .into(),
            ));
        }
        if self.outbox_lease_ttl < Duration::from_secs(2) {
            return Err(ConfigError::Invalid("ORDER_SAGA_OUTBOX_LEASE_TTL must be at least 2s".into()));
        }
        if let Some(token) = &self.ops_token
            && token.len() < 16
        {
            return Err(ConfigError::Invalid("ORDER_SAGA_OPS_TOKEN must be at least 16 characters".into()));
        }
        if self.ops_bulk_rate == 0 {
            return Err(ConfigError::Invalid("ORDER_SAGA_OPS_BULK_RATE must be at least 1".into()));
        }
        tokio_cron_scheduler::Job::new_async(self.sweep_schedule.as_str(), |_, _| Box::pin(async {})).map_err(|e| {
            ConfigError::Invalid(format!(
                "ORDER_SAGA_SWEEP_SCHEDULE {:?} is not a valid cron expression: {e}",
                self.sweep_schedule
            ))
        })?;
        self.topics()?;
        if self.rest_mode != RestMode::Off && (self.rest_inventory_url.is_none() || self.rest_payment_url.is_none()) {
            return Err(ConfigError::Invalid(
                "ORDER_SAGA_REST_MODE is on: set ORDER_SAGA_REST_INVENTORY_URL and ORDER_SAGA_REST_PAYMENT_URL".into(),
            ));
        }
        for url in [&self.rest_inventory_url, &self.rest_payment_url].into_iter().flatten() {
            if reqwest::Url::parse(url).is_err() {
                return Err(ConfigError::Invalid(format!("{url:?} is not a valid URL")));
            }
        }
        if needs_kafka {
            self.kafka_brokers()?;
            let sr = self.schema_registry_url()?;
            if reqwest::Url::parse(sr).is_err() {
                return Err(ConfigError::Invalid(format!("ORDER_SAGA_SCHEMA_REGISTRY_URL {sr:?} is not a valid URL")));
            }
            let proto = self.kafka_security_protocol.to_ascii_lowercase();
            if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&proto.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "ORDER_SAGA_KAFKA_SECURITY_PROTOCOL must be plaintext, ssl, sasl_plaintext or sasl_ssl (found {:?})",
                    self.kafka_security_protocol
                )));
            }
            if proto.starts_with("sasl") && (self.kafka_sasl_username.is_none() || self.kafka_sasl_password.is_none()) {
                return Err(ConfigError::Invalid(
                    "a sasl_* security protocol needs ORDER_SAGA_KAFKA_SASL_USERNAME and ORDER_SAGA_KAFKA_SASL_PASSWORD".into(),
                ));
            }
        }
        Ok(())
    }

    /// Resolves topic names for every message plus the dead-letter topic.
    pub fn topics(&self) -> Result<Topics, ConfigError> {
        let mut names = BTreeMap::new();
        for &kind in MessageKind::ALL {
            names.insert(kind, format!("{}{}", self.kafka_topic_prefix, kind.name()));
        }
        for (msg, topic) in &self.kafka_topics {
            let kind: MessageKind = msg.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "ORDER_SAGA_KAFKA_TOPICS: {msg:?} is not a message name; known: {}",
                    MessageKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
                ))
            })?;
            names.insert(kind, topic.clone());
        }
        let dlq = format!("{}{}", self.kafka_topic_prefix, self.kafka_dlq_topic);
        let all: Vec<&String> = names.values().chain(std::iter::once(&dlq)).collect();
        for t in &all {
            if t.is_empty() || t.len() > 249 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return Err(ConfigError::Invalid(format!(
                    "{t:?} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &all {
            if !seen.insert(*t) {
                return Err(ConfigError::Invalid(format!("topic {t:?} is used for two different messages")));
            }
        }
        Ok(Topics { names, dlq })
    }

    /// Timer duration overrides, parsed.
    pub fn timer_overrides(&self) -> Result<BTreeMap<String, Duration>, ConfigError> {
        self.timers
            .iter()
            .map(|(k, v)| {
                let d = duration(v).map_err(|e| ConfigError::Invalid(format!("ORDER_SAGA_TIMERS {k}={v}: {e}")))?;
                let d = crate::saga::check_timer(d)
                    .map_err(|e| ConfigError::Invalid(format!("ORDER_SAGA_TIMERS {k}={v}: {e}")))?;
                Ok((k.clone(), d))
            })
            .collect()
    }
}

/// Resolved topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    names: BTreeMap<MessageKind, String>,
    pub dlq: String,
}

impl Topics {
    pub fn of(&self, kind: MessageKind) -> &str {
        // Every kind is inserted by `Config::topics`.
        self.names.get(&kind).map(String::as_str).unwrap_or(kind.name())
    }

    /// Which message kind a topic carries.
    pub fn kind_of(&self, topic: &str) -> Option<MessageKind> {
        self.names.iter().find(|(_, t)| t.as_str() == topic).map(|(k, _)| *k)
    }

    /// Every topic, for `topics create`.
    pub fn all(&self) -> Vec<&str> {
        self.names.values().map(String::as_str).chain(std::iter::once(self.dlq.as_str())).collect()
    }

    /// Topics the saga consumer subscribes to.
    pub fn inbound(&self) -> Vec<&str> {
        self.names
            .iter()
            .filter(|(k, _)| k.direction() == crate::contracts::Direction::In)
            .map(|(_, t)| t.as_str())
            .collect()
    }

    /// Same mapping with a different prefix (tests use one prefix per test).
    pub fn with_prefix(prefix: &str) -> Topics {
        let names = MessageKind::ALL.iter().map(|&k| (k, format!("{prefix}{}", k.name()))).collect();
        Topics { names, dlq: format!("{prefix}order-saga.dlq") }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The daemon's options under two subcommands: what these tests need of
    /// the command line (the real one is `crate::cli::Cli`).
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TestCommand {
        Serve,
        Migrate,
    }

    /// Parses without reading `ORDER_SAGA_*` from the environment, so the
    /// tests do not depend on the shell they run in.
    fn parse(args: &[&str]) -> Result<Cli, ConfigError> {
        let cmd = Cli::command().mut_args(|a| a.env(None::<&str>));
        parse_with(cmd, std::iter::once("order-saga").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn file_values_apply_under_flags() {
        let dir = std::env::temp_dir().join(format!("os-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "database_url = \"mysql://file/db\"\nhttp-addr = \"127.0.0.1:9999\"\nkafka_topic = [\"payment.failed.v1=pf\"]\noutbox_relay = false\n",
        )
        .unwrap();
        let cli = parse(&["--config", file.to_str().unwrap(), "--http-addr", "127.0.0.1:1234", "migrate"]).unwrap();
        assert_eq!(cli.config.database_url.as_deref(), Some("mysql://file/db"));
        assert_eq!(cli.config.http_addr.port(), 1234, "flag beats file");
        assert!(!cli.config.outbox_relay);
        assert_eq!(cli.config.topics().unwrap().of(MessageKind::PaymentFailed), "pf");

        std::fs::write(&file, "databse_url = \"x\"\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap(), "migrate"]).unwrap_err();
        assert!(err.to_string().contains("unknown key \"databse_url\""), "{err}");
    }

    #[test]
    fn validation_messages_name_the_variable() {
        let cli = parse(&["migrate"]).unwrap();
        let err = cli.config.validate(false).unwrap_err().to_string();
        assert!(err.contains("ORDER_SAGA_DATABASE_URL"), "{err}");

        let cli = parse(&["--database-url", "postgres://x", "migrate"]).unwrap();
        assert!(cli.config.validate(false).unwrap_err().to_string().contains("mysql://"));

        let cli = parse(&["--database-url", "mysql://x/y", "serve"]).unwrap();
        assert!(cli.config.validate(true).unwrap_err().to_string().contains("ORDER_SAGA_KAFKA_BROKERS"));

        let cli = parse(&["--database-url", "mysql://x/y", "--sweep-schedule", "every second", "migrate"]).unwrap();
        assert!(cli.config.validate(false).unwrap_err().to_string().contains("cron"));

        let cli = parse(&["--database-url", "mysql://x/y", "--kafka-topic", "nope.v1=x", "migrate"]).unwrap();
        assert!(cli.config.validate(false).unwrap_err().to_string().contains("not a message name"));

        let cli = parse(&["--database-url", "mysql://x/y", "--ops-token", "short", "migrate"]).unwrap();
        assert!(cli.config.validate(false).unwrap_err().to_string().contains("ORDER_SAGA_OPS_TOKEN"));
    }

    #[test]
    fn bad_durations_are_refused_by_the_parser() {
        let err = parse(&["--shutdown-grace", "soon", "migrate"]).unwrap_err().to_string();
        assert!(err.contains("15s"), "{err}");
    }

    #[test]
    fn topics_apply_prefix_and_overrides() {
        let cli =
            parse(&["--kafka-topic-prefix", "prod.", "--kafka-topic", "order.created.v1=orders", "migrate"]).unwrap();
        let t = cli.config.topics().unwrap();
        assert_eq!(t.of(MessageKind::OrderCreated), "orders");
        assert_eq!(t.of(MessageKind::PaymentFailed), "prod.payment.failed.v1");
        assert_eq!(t.dlq, "prod.order-saga.dlq");
        assert_eq!(t.kind_of("prod.payment.failed.v1"), Some(MessageKind::PaymentFailed));
        assert_eq!(t.inbound().len(), 4);
    }
}
