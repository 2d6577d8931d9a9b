//! Configuration: one typed clap struct of per-component blocks
//! (`components.rs`), from flags, `ORDER_SAGA_*` environment
//! variables, or a TOML file — in that order of precedence — validated before
//! anything starts.
//!
//! The TOML file (`--config` / `ORDER_SAGA_CONFIG`) uses the long option names
//! with `_` or `-` as keys (`database_url = "mysql://…"`). A key that is not an
//! option is an error, so a typo cannot silently fall back to a default.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::contracts::MessageKind;

mod components;
mod file;

pub use self::components::*;
pub use self::file::{parse_with, parse_with_file};

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

/// Every daemon option, in one block per component. Flattened into the CLI;
/// `global` so options may follow the subcommand. Option names and
/// environment variables are flat (`--outbox-batch`, `ORDER_SAGA_OUTBOX_BATCH`);
/// the blocks only group them in code (`cfg.outbox.outbox_batch`).
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TOML file with options (keys are the long option names). Flags and environment win over it.
    #[arg(long, global = true, env = "ORDER_SAGA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Time allowed for a graceful shutdown (stop consuming, finish the batch, commit, flush).
    #[arg(long, global = true, env = "ORDER_SAGA_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub consumer: ConsumerConfig,

    #[command(flatten)]
    pub partitioning: PartitioningConfig,

    #[command(flatten)]
    pub registry: RegistryConfig,

    #[command(flatten)]
    pub sagas: SagasConfig,

    #[command(flatten)]
    pub outbox: OutboxConfig,

    #[command(flatten)]
    pub rest: RestConfig,

    #[command(flatten)]
    pub ops: OpsConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
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

impl Config {
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database.database_url.as_ref().map(Secret::expose).filter(|s| !s.is_empty()).ok_or_else(|| {
            ConfigError::Invalid(
                "no database configured: set ORDER_SAGA_DATABASE_URL (or --database-url), e.g. mysql://root@127.0.0.1:3306/order_saga".into(),
            )
        })
    }

    pub fn kafka_brokers(&self) -> Result<&str, ConfigError> {
        self.kafka.kafka_brokers.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
            ConfigError::Invalid(
                "no Kafka brokers configured: set ORDER_SAGA_KAFKA_BROKERS (or --kafka-brokers), e.g. 127.0.0.1:9092"
                    .into(),
            )
        })
    }

    pub fn schema_registry_url(&self) -> Result<&str, ConfigError> {
        self.registry.schema_registry_url.as_ref().map(Secret::expose).filter(|s| !s.is_empty()).ok_or_else(|| {
            ConfigError::Invalid("no schema registry configured: set ORDER_SAGA_SCHEMA_REGISTRY_URL (or --schema-registry-url), e.g. http://127.0.0.1:8081".into())
        })
    }

    /// Checks everything that can be checked without connecting anywhere.
    /// `needs_kafka` is false for commands that only touch the database.
    /// The parsed ORDER_SAGA_REGION_PARTITIONS.
    pub fn region_map(&self) -> Result<crate::partitioning::RegionMap, ConfigError> {
        self.partitioning
            .region_partitions
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("ORDER_SAGA_REGION_PARTITIONS: {e}")))
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
        if self.database.database_max_connections < 2 {
            return Err(ConfigError::Invalid("ORDER_SAGA_DATABASE_MAX_CONNECTIONS must be at least 2".into()));
        }
        if !(1..=1000).contains(&self.http.order_group_commit_max) {
            return Err(ConfigError::Invalid("ORDER_SAGA_ORDER_GROUP_COMMIT_MAX must be 1 to 1000".into()));
        }
        if !(1..=64).contains(&self.http.order_group_commit_in_flight) {
            return Err(ConfigError::Invalid("ORDER_SAGA_ORDER_GROUP_COMMIT_IN_FLIGHT must be 1 to 64".into()));
        }
        if !(1..=1000).contains(&self.consumer.consumer_group_commit_max) {
            return Err(ConfigError::Invalid("ORDER_SAGA_CONSUMER_GROUP_COMMIT_MAX must be 1 to 1000".into()));
        }
        if !(1..=64).contains(&self.consumer.consumer_group_commit_in_flight) {
            return Err(ConfigError::Invalid("ORDER_SAGA_CONSUMER_GROUP_COMMIT_IN_FLIGHT must be 1 to 64".into()));
        }
        if self.consumer.consumer_group_commit_linger > Duration::from_secs(1) {
            return Err(ConfigError::Invalid("ORDER_SAGA_CONSUMER_GROUP_COMMIT_LINGER must be at most 1s".into()));
        }
        if self.http.http_max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("ORDER_SAGA_HTTP_MAX_BODY_BYTES must be at least 1024".into()));
        }
        if self.shutdown_grace.is_zero() {
            return Err(ConfigError::Invalid("ORDER_SAGA_SHUTDOWN_GRACE must be greater than zero".into()));
        }
        if self.http.idempotency_retention < Duration::from_secs(60) {
            return Err(ConfigError::Invalid("ORDER_SAGA_IDEMPOTENCY_RETENTION must be at least 1m".into()));
        }
        if !(1..=1024).contains(&self.outbox.outbox_shards) {
            return Err(ConfigError::Invalid("ORDER_SAGA_OUTBOX_SHARDS must be between 1 and 1024".into()));
        }
        if self.consumer.consumer_batch_max > CONSUMER_BATCH_MAX_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "ORDER_SAGA_CONSUMER_BATCH_MAX must be at most {CONSUMER_BATCH_MAX_LIMIT}"
            )));
        }
        if self.outbox.outbox_batch == 0 || self.sagas.sweep_batch == 0 || self.consumer.consumer_batch_max == 0 {
            return Err(ConfigError::Invalid(
                "ORDER_SAGA_OUTBOX_BATCH, ORDER_SAGA_SWEEP_BATCH and ORDER_SAGA_CONSUMER_BATCH_MAX must be at least 1"
                    .into(),
            ));
        }
        if self.outbox.outbox_lease_ttl < Duration::from_secs(2) {
            return Err(ConfigError::Invalid("ORDER_SAGA_OUTBOX_LEASE_TTL must be at least 2s".into()));
        }
        if let Some(token) = &self.ops.ops_token
            && token.expose().len() < 16
        {
            return Err(ConfigError::Invalid("ORDER_SAGA_OPS_TOKEN must be at least 16 characters".into()));
        }
        self.auth_settings()?;
        self.oidc_settings()?;
        if self.ops.ops_bulk_rate == 0 {
            return Err(ConfigError::Invalid("ORDER_SAGA_OPS_BULK_RATE must be at least 1".into()));
        }
        tokio_cron_scheduler::Job::new_async(self.sagas.sweep_schedule.as_str(), |_, _| Box::pin(async {})).map_err(
            |e| {
                ConfigError::Invalid(format!(
                    "ORDER_SAGA_SWEEP_SCHEDULE {:?} is not a valid cron expression: {e}",
                    self.sagas.sweep_schedule
                ))
            },
        )?;
        self.topics()?;
        if self.rest.rest_mode != RestMode::Off
            && (self.rest.rest_inventory_url.is_none() || self.rest.rest_payment_url.is_none())
        {
            return Err(ConfigError::Invalid(
                "ORDER_SAGA_REST_MODE is on: set ORDER_SAGA_REST_INVENTORY_URL and ORDER_SAGA_REST_PAYMENT_URL".into(),
            ));
        }
        for url in [&self.rest.rest_inventory_url, &self.rest.rest_payment_url].into_iter().flatten() {
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
            if self.kafka.kafka_security_protocol.is_sasl()
                && (self.kafka.kafka_sasl_username.is_none() || self.kafka.kafka_sasl_password.is_none())
            {
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
            names.insert(kind, format!("{}{}", self.kafka.kafka_topic_prefix, kind.name()));
        }
        for (msg, topic) in &self.kafka.kafka_topics {
            let kind: MessageKind = msg.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "ORDER_SAGA_KAFKA_TOPICS: {msg:?} is not a message name; known: {}",
                    MessageKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
                ))
            })?;
            names.insert(kind, topic.clone());
        }
        let dlq = format!("{}{}", self.kafka.kafka_topic_prefix, self.kafka.kafka_dlq_topic);
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
        self.sagas
            .timers
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
mod tests;

impl Config {
    /// The console's sign-in through an OpenID Provider, when configured:
    /// the issuer and the client id go together.
    pub fn oidc_settings(&self) -> Result<Option<crate::auth::oidc::OidcSettings>, ConfigError> {
        let o = &self.ops;
        let (issuer, client_id) = match (&o.ops_oidc_issuer, &o.ops_oidc_client_id) {
            (None, None) if o.ops_oidc_client_secret.is_none() && o.ops_oidc_redirect_url.is_none() => return Ok(None),
            (Some(i), Some(c)) => (i, c),
            _ => {
                return Err(ConfigError::Invalid(
                    "set ORDER_SAGA_OPS_OIDC_ISSUER and ORDER_SAGA_OPS_OIDC_CLIENT_ID together (or no ORDER_SAGA_OPS_OIDC_*)"
                        .into(),
                ));
            }
        };
        let url = |name: &str, v: &str| match reqwest::Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => Ok(()),
            _ => Err(ConfigError::Invalid(format!("{name} {v:?} is not an http(s) URL"))),
        };
        url("ORDER_SAGA_OPS_OIDC_ISSUER", issuer)?;
        if let Some(r) = &o.ops_oidc_redirect_url {
            url("ORDER_SAGA_OPS_OIDC_REDIRECT_URL", r)?;
            if !r.ends_with("/ops/ui/callback") {
                return Err(ConfigError::Invalid(
                    "ORDER_SAGA_OPS_OIDC_REDIRECT_URL must end with /ops/ui/callback (the console's callback)".into(),
                ));
            }
        }
        Ok(Some(crate::auth::oidc::OidcSettings {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret: o.ops_oidc_client_secret.as_ref().map(|s| s.expose().to_owned()),
            redirect_url: o.ops_oidc_redirect_url.clone(),
            scopes: o.ops_oidc_scopes.clone(),
            role_claim: o.ops_oidc_role_claim.clone(),
        }))
    }

    /// The orders API's token verification, when configured: the JWKS URL,
    /// issuer and audience go together.
    pub fn auth_settings(&self) -> Result<Option<crate::auth::AuthSettings>, ConfigError> {
        let a = &self.auth;
        match (&a.auth_jwks_url, &a.auth_issuer, &a.auth_audience) {
            (None, None, None) => Ok(None),
            (Some(jwks_url), Some(issuer), Some(audience)) => {
                let url = reqwest::Url::parse(jwks_url)
                    .map_err(|_| ConfigError::Invalid(format!("ORDER_SAGA_AUTH_JWKS_URL {jwks_url:?} is not a URL")))?;
                if !matches!(url.scheme(), "https" | "http") {
                    return Err(ConfigError::Invalid("ORDER_SAGA_AUTH_JWKS_URL must be an http(s) URL".into()));
                }
                Ok(Some(crate::auth::AuthSettings {
                    jwks_url: jwks_url.clone(),
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    region_claim: a.auth_region_claim.clone(),
                }))
            }
            _ => Err(ConfigError::Invalid(
                "set all three of ORDER_SAGA_AUTH_JWKS_URL, ORDER_SAGA_AUTH_ISSUER and ORDER_SAGA_AUTH_AUDIENCE, or none"
                    .into(),
            )),
        }
    }
}
