//! The configuration blocks, one per component, and the enums of their
//! options. Flattened into [`super::Config`]: option names and environment
//! variables stay flat (`--outbox-batch`, `ORDER_SAGA_OUTBOX_BATCH`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{DEFAULT_METRIC_REGIONS, duration, key_value};

/// A credential, or a URL that may carry one: never printed (`Debug` shows
/// `[redacted]`), read with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

fn ops_credential(s: &str) -> Result<crate::auth::OpsCredential, String> {
    crate::auth::OpsCredential::parse(s)
}

/// The database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// MySQL/MariaDB URL, e.g. mysql://user:pass@db:3306/orders.
    #[arg(long, global = true, env = "ORDER_SAGA_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// Maximum open database connections per process.
    #[arg(long, global = true, env = "ORDER_SAGA_DATABASE_MAX_CONNECTIONS", default_value_t = 24)]
    pub database_max_connections: u32,

    /// How long to wait for a database connection before failing a request.
    #[arg(long, global = true, env = "ORDER_SAGA_DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub database_acquire_timeout: Duration,

    /// The longest a transaction (or a statement outside one) may take before
    /// it is abandoned as transient and its connection dropped: a connection
    /// that went silent mid-statement must not hold a partition, the relay or
    /// the sweeper.
    #[arg(long, global = true, env = "ORDER_SAGA_DATABASE_DEADLINE", default_value = "30s", value_parser = duration)]
    pub database_deadline: Duration,

    /// Apply pending migrations when `serve` starts (replicas serialise on a
    /// database lock). Turn off when a deployment job runs `order-saga migrate`.
    #[arg(long, global = true, env = "ORDER_SAGA_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
}

/// The HTTP ingress and the orders API.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address of the HTTP ingress (orders API, health, metrics, ops).
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// A second listener for `/ops`, the console and `/metrics` (e.g. 127.0.0.1:9090 or a port
    /// only operators reach); they then leave the orders API's port. Unset: one port for all.
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_ADDR")]
    pub ops_addr: Option<SocketAddr>,

    /// PEM certificate chain of the HTTP listener: with ORDER_SAGA_HTTP_TLS_KEY, the listener
    /// speaks TLS (rustls) only. Both files are read again when they change (rotation).
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,

    /// PEM private key of the HTTP listener's certificate.
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,

    /// PEM CA certificates: with TLS on, every client must present a certificate they signed (mTLS).
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_TLS_CLIENT_CA", requires = "http_tls_cert")]
    pub http_tls_client_ca: Option<PathBuf>,

    /// A connection whose request header (or TLS handshake) is not complete within this is
    /// closed: slow or idle clients cannot hold connections.
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub http_header_read_timeout: Duration,

    /// Requests per second each caller may send to the orders API (the token's subject, or the
    /// peer address on an open API); more get 429 with Retry-After. 0: no limit.
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_RATE_LIMIT", default_value_t = 0)]
    pub http_rate_limit: u32,

    /// Requests a caller may send at once above its rate (default: one second's worth).
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_RATE_BURST")]
    pub http_rate_burst: Option<u32>,

    /// Most HTTP connections open at once; more are closed as they arrive.
    #[arg(long, global = true, env = "ORDER_SAGA_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,

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

    /// Group-commit transactions of `POST /orders` in flight at once. Fewer make larger groups
    /// under load (fewer statements and fsyncs per order); more overlap more round trips.
    #[arg(long, global = true, env = "ORDER_SAGA_ORDER_GROUP_COMMIT_IN_FLIGHT", default_value_t = 8)]
    pub order_group_commit_in_flight: usize,

    /// How long idempotency keys are kept; a key reused after that creates a new order.
    #[arg(long, global = true, env = "ORDER_SAGA_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = duration)]
    pub idempotency_retention: Duration,
}

/// Who may call the orders API: bearer JWTs from an OAuth 2.0 / OIDC issuer.
/// Without a JWKS URL the API is open to every caller (a startup WARN says so).
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// The issuer's JWKS URL (its public signing keys). Set it, with the issuer and the audience,
    /// to require a bearer token on every orders endpoint.
    #[arg(long, global = true, env = "ORDER_SAGA_AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// The `iss` every token must carry (the issuer's identifier, e.g. `https://idp.example.com/`).
    #[arg(long, global = true, env = "ORDER_SAGA_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// The `aud` every token must carry (this API's identifier at the issuer).
    #[arg(long, global = true, env = "ORDER_SAGA_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,

    /// The claim listing the tenant regions a caller may see (a list or a space-separated string);
    /// a token without it sees every region.
    #[arg(long, global = true, env = "ORDER_SAGA_AUTH_REGION_CLAIM", default_value = "tenant_regions")]
    pub auth_region_claim: String,
}

/// Kafka clients and topic names.
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma separated (host:port,…).
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Consumer group of the saga consumer. All replicas share it.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_GROUP_ID", default_value = "order-service-events")]
    pub kafka_group_id: String,

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
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SECURITY_PROTOCOL", value_enum, ignore_case = true, default_value_t = SecurityProtocol::Plaintext)]
    pub kafka_security_protocol: SecurityProtocol,

    /// SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) when a sasl_* protocol is used.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SASL_MECHANISM", value_enum, ignore_case = true)]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,

    /// SASL username.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SASL_USERNAME", hide_env_values = true)]
    pub kafka_sasl_username: Option<String>,

    /// SASL password.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,

    /// CA certificate file for TLS to the brokers.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<PathBuf>,

    /// Client certificate (PEM) for TLS to the brokers (mTLS), with ORDER_SAGA_KAFKA_SSL_KEY_LOCATION.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SSL_CERT_LOCATION", requires = "kafka_ssl_key_location")]
    pub kafka_ssl_cert_location: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SSL_KEY_LOCATION", requires = "kafka_ssl_cert_location")]
    pub kafka_ssl_key_location: Option<PathBuf>,

    /// Password of the client key, if it is encrypted.
    #[arg(long, global = true, env = "ORDER_SAGA_KAFKA_SSL_KEY_PASSWORD", hide_env_values = true)]
    pub kafka_ssl_key_password: Option<Secret>,

    /// Extra librdkafka properties KEY=VALUE (repeatable; comma separated in the environment).
    /// Properties the daemon's correctness depends on cannot be overridden.
    #[arg(long = "kafka-property", global = true, env = "ORDER_SAGA_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = key_value, hide_env_values = true)]
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
}

/// The saga consumer: batching, de-duplication window, rolling deploys.
#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    /// How long handled event ids are kept for de-duplication. Must be longer than the inbound
    /// topics' retention.ms (Kafka's default is 7 days): `serve` refuses to start otherwise, since an
    /// event redelivered after the inbox forgot it would be applied twice.
    #[arg(long, global = true, env = "ORDER_SAGA_INBOX_RETENTION", default_value = "8d", value_parser = duration)]
    pub inbox_retention: Duration,

    /// How long the consumer waits (retrying) on an event for a saga of a definition version this
    /// replica has not loaded — a newer replica of a rolling deploy takes it — before quarantining it.
    #[arg(long, global = true, env = "ORDER_SAGA_UNKNOWN_VERSION_PATIENCE", default_value = "15m", value_parser = duration)]
    pub unknown_version_patience: Duration,

    /// Most events applied in one database transaction (1 to 1000; 1 = no batching): one
    /// partition's batch, or the runs of several partitions committed together.
    #[arg(long, global = true, env = "ORDER_SAGA_CONSUMER_BATCH_MAX", default_value_t = 200)]
    pub consumer_batch_max: usize,

    /// Most partitions' runs of events committed together in one transaction when they become
    /// ready while earlier ones commit (group commit; 1 = every partition's run alone). Each run
    /// keeps its own outcome: a shared transaction that fails is rolled back and every run goes alone.
    #[arg(long, global = true, env = "ORDER_SAGA_CONSUMER_GROUP_COMMIT_MAX", default_value_t = 16)]
    pub consumer_group_commit_max: usize,

    /// Group-commit transactions of the consumer in flight at once. Fewer make larger groups at
    /// moderate load (fewer statements and fsyncs per event); more overlap more round trips.
    #[arg(long, global = true, env = "ORDER_SAGA_CONSUMER_GROUP_COMMIT_IN_FLIGHT", default_value_t = 2)]
    pub consumer_group_commit_in_flight: usize,

    /// How long a consumer group commit with a free slot waits after its first run for more runs
    /// before it commits (0: at once). Trades latency for fewer transactions at moderate load.
    #[arg(long, global = true, env = "ORDER_SAGA_CONSUMER_GROUP_COMMIT_LINGER", default_value = "0ms", value_parser = duration)]
    pub consumer_group_commit_linger: Duration,
}

/// Where published messages go (partition strategy, regional ranges).
#[derive(Debug, Clone, Args)]
pub struct PartitioningConfig {
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
}

/// The Schema Registry.
#[derive(Debug, Clone, Args)]
pub struct RegistryConfig {
    /// Confluent-compatible Schema Registry URL.
    /// Held as a [`Secret`]: older deployments put credentials in its userinfo.
    #[arg(long, global = true, env = "ORDER_SAGA_SCHEMA_REGISTRY_URL", hide_env_values = true)]
    pub schema_registry_url: Option<Secret>,

    /// Basic-auth user of the Schema Registry (Confluent Cloud: the API key).
    #[arg(
        long,
        global = true,
        env = "ORDER_SAGA_SCHEMA_REGISTRY_USERNAME",
        hide_env_values = true,
        requires = "schema_registry_password"
    )]
    pub schema_registry_username: Option<String>,

    /// Basic-auth password of the Schema Registry (Confluent Cloud: the API secret).
    #[arg(
        long,
        global = true,
        env = "ORDER_SAGA_SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true,
        requires = "schema_registry_username"
    )]
    pub schema_registry_password: Option<Secret>,

    /// PEM CA certificates that sign the Schema Registry's certificate (a private CA).
    #[arg(long, global = true, env = "ORDER_SAGA_SCHEMA_REGISTRY_CA")]
    pub schema_registry_ca: Option<PathBuf>,

    /// Timeout of one Schema Registry request.
    #[arg(long, global = true, env = "ORDER_SAGA_SCHEMA_REGISTRY_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub schema_registry_timeout: Duration,

    /// Register the schemas of published messages at startup. Turn off where a CI
    /// pipeline owns registration; the daemon then only verifies.
    #[arg(long, global = true, env = "ORDER_SAGA_SCHEMA_REGISTRY_AUTO_REGISTER", default_value_t = true, action = clap::ArgAction::Set)]
    pub schema_registry_auto_register: bool,
}

/// Saga definitions, timer overrides and the timeout sweeper.
#[derive(Debug, Clone, Args)]
pub struct SagasConfig {
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

    /// Judge timers by event time: a due timer fires only once every partition
    /// of the topics that could still move its saga has been consumed past its
    /// due time (plus the allowed lateness). `false` fires at the due time
    /// whatever the consumer has read (processing time).
    #[arg(long, global = true, env = "ORDER_SAGA_TIMER_EVENT_TIME", default_value_t = true, action = clap::ArgAction::Set)]
    pub timer_event_time: bool,

    /// How far a producer's clock (Kafka message timestamps) may be behind the
    /// database's: a timer waits until the partitions are consumed this far past its due time.
    #[arg(long, global = true, env = "ORDER_SAGA_TIMER_ALLOWED_LATENESS", default_value = "2s", value_parser = duration)]
    pub timer_allowed_lateness: Duration,

    /// The longest a due timer waits for a lagging or unassigned partition;
    /// after that it fires anyway (counted in saga_timers_fired_past_bound_total).
    #[arg(long, global = true, env = "ORDER_SAGA_TIMER_MAX_DEFER", default_value = "1h", value_parser = duration)]
    pub timer_max_defer: Duration,
}

/// The outbox relay.
#[derive(Debug, Clone, Args)]
pub struct OutboxConfig {
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
}

/// REST delivery of commands.
#[derive(Debug, Clone, Args)]
pub struct RestConfig {
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
}

/// The ops surface (`/ops`, the console, bulk actions).
#[derive(Debug, Clone, Args)]
pub struct OpsConfig {
    /// Bearer token for /ops endpoints. Without it the ops endpoints are disabled (404), not open.
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_TOKEN", hide_env_values = true)]
    pub ops_token: Option<Secret>,

    /// Named `/ops` bearer credentials, each `name:role:sha256-hex` (role read, act or admin;
    /// the SHA-256 of the secret, e.g. `printf %s "$SECRET" | sha256sum`), comma separated.
    /// The name is the audited actor; the daemon never holds the secrets themselves.
    #[arg(long = "ops-credential", global = true, env = "ORDER_SAGA_OPS_CREDENTIALS", value_delimiter = ',', value_parser = ops_credential, hide_env_values = true)]
    pub ops_credentials: Vec<crate::auth::OpsCredential>,

    /// The OpenID Provider operators sign in to the console with (its issuer identifier; discovery
    /// at `{issuer}/.well-known/openid-configuration`). With it, the console offers "Sign in with
    /// the identity provider" (authorization code + PKCE) and each operator is a person with a role.
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_OIDC_ISSUER")]
    pub ops_oidc_issuer: Option<String>,

    /// The console's client id at the OpenID Provider.
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_OIDC_CLIENT_ID")]
    pub ops_oidc_client_id: Option<String>,

    /// The console's client secret (a confidential client); unset for a public client (PKCE alone).
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub ops_oidc_client_secret: Option<Secret>,

    /// The callback registered at the provider, e.g. `https://ops.example.com/ops/ui/callback`.
    /// Unset: the request's host with `/ops/ui/callback` (https, or http on a loopback host).
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_OIDC_REDIRECT_URL")]
    pub ops_oidc_redirect_url: Option<String>,

    /// Scopes the console asks for (`openid` is always added), space separated.
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_OIDC_SCOPES", default_value = "openid profile email")]
    pub ops_oidc_scopes: String,

    /// The ID token claim carrying the operator's ops roles (`ops:read`, `ops:act`, `ops:admin`);
    /// a dotted path reaches into objects (Keycloak: `realm_access.roles`).
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_OIDC_ROLE_CLAIM", default_value = "roles")]
    pub ops_oidc_role_claim: String,

    /// Most ops actions per second in a bulk action.
    #[arg(long, global = true, env = "ORDER_SAGA_OPS_BULK_RATE", default_value_t = 50)]
    pub ops_bulk_rate: u32,
}

/// Logs, traces and metric labels.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// Tenant regions reported as metric label values; orders of any other region are counted
    /// as `other`, so clients cannot create unbounded series.
    #[arg(long = "metric-region", global = true, env = "ORDER_SAGA_METRIC_REGIONS", value_delimiter = ',',
          default_value = DEFAULT_METRIC_REGIONS)]
    pub metric_regions: Vec<String>,

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

/// Kafka `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecurityProtocol {
    #[value(name = "plaintext")]
    Plaintext,
    #[value(name = "ssl")]
    Ssl,
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn is_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// Kafka `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
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
