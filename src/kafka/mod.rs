//! Kafka clients (rdkafka): the saga consumer, the producer the outbox relay
//! uses, topic administration, and header helpers.

pub mod admin;
pub mod consumer;
pub mod inbound;
pub mod producer;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot create the Kafka {what}: {source}")]
    Create {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("topic administration failed: {0}")]
    Admin(String),
    #[error("the consumer thread failed: {0}")]
    Thread(String),
}

/// Connection settings shared by every client. `Debug` shows no credential
/// and no property value (one may be a password).
#[derive(Clone)]
pub struct ClientSettings {
    pub brokers: String,
    pub security_protocol: String,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub ssl_ca_location: Option<String>,
    /// Client certificate and key (mTLS), and the key's password.
    pub ssl_cert_location: Option<String>,
    pub ssl_key_location: Option<String>,
    pub ssl_key_password: Option<String>,
    /// User-supplied librdkafka properties, applied before ours.
    pub extra: Vec<(String, String)>,
    pub client_id: String,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("brokers", &self.brokers)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username.as_ref().map(|_| "[redacted]"))
            .field("sasl_password", &self.sasl_password.as_ref().map(|_| "[redacted]"))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_cert_location", &self.ssl_cert_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("ssl_key_password", &self.ssl_key_password.as_ref().map(|_| "[redacted]"))
            .field("extra", &self.extra.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl ClientSettings {
    pub fn from_config(c: &Config, brokers: &str) -> ClientSettings {
        ClientSettings {
            brokers: brokers.to_owned(),
            security_protocol: c.kafka.kafka_security_protocol.as_str().to_owned(),
            sasl_mechanism: c.kafka.kafka_sasl_mechanism.map(|m| m.as_str().to_owned()),
            sasl_username: c.kafka.kafka_sasl_username.clone(),
            sasl_password: c.kafka.kafka_sasl_password.as_ref().map(|p| p.expose().to_owned()),
            ssl_ca_location: c.kafka.kafka_ssl_ca_location.as_ref().map(|p| p.display().to_string()),
            ssl_cert_location: c.kafka.kafka_ssl_cert_location.as_ref().map(|p| p.display().to_string()),
            ssl_key_location: c.kafka.kafka_ssl_key_location.as_ref().map(|p| p.display().to_string()),
            ssl_key_password: c.kafka.kafka_ssl_key_password.as_ref().map(|p| p.expose().to_owned()),
            extra: c.kafka.kafka_properties.clone(),
            client_id: c.telemetry.service_name.clone(),
        }
    }

    /// Plain settings for tests and tools.
    pub fn plaintext(brokers: &str) -> ClientSettings {
        ClientSettings {
            brokers: brokers.to_owned(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_cert_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            extra: Vec::new(),
            client_id: "order-saga".into(),
        }
    }

    /// Base client config: user properties first, then connection settings.
    /// Callers then set the properties correctness depends on, which win.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", &self.client_id);
        c.set("security.protocol", &self.security_protocol);
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p);
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca);
        }
        if let Some(cert) = &self.ssl_cert_location {
            c.set("ssl.certificate.location", cert);
        }
        if let Some(key) = &self.ssl_key_location {
            c.set("ssl.key.location", key);
        }
        if let Some(p) = &self.ssl_key_password {
            c.set("ssl.key.password", p);
        }
        c
    }

    /// A warning when the settings send a password in clear text (SASL
    /// PLAIN without TLS).
    pub fn cleartext_password_warning(&self) -> Option<&'static str> {
        (self.security_protocol == "sasl_plaintext" && self.sasl_mechanism.as_deref() == Some("PLAIN")).then_some(
            "Kafka SASL PLAIN over sasl_plaintext sends the password in clear text: use sasl_ssl, or SCRAM at least",
        )
    }
}

/// Routes librdkafka's logs to `tracing` with levels that follow the logging
/// rule (ERROR only when an operator must act): a broker that is down is
/// something librdkafka retries by itself, so it is a WARN; only fatal
/// client errors are ERRORs.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaLog;

pub(crate) fn log_librdkafka(level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
    use rdkafka::config::RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error | Warning => {
            tracing::warn!(target: "librdkafka", facility = fac, "{log_message}")
        }
        Notice | Info => tracing::info!(target: "librdkafka", facility = fac, "{log_message}"),
        Debug => tracing::debug!(target: "librdkafka", facility = fac, "{log_message}"),
    }
}

pub(crate) fn error_librdkafka(error: rdkafka::error::KafkaError, reason: &str) {
    let fatal = matches!(error.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::Fatal));
    if fatal {
        tracing::error!(target: "librdkafka", error = %error, "fatal Kafka client error: {reason}");
    } else {
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
    }
}

impl rdkafka::ClientContext for KafkaLog {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        error_librdkafka(error, reason);
    }
}

pub(crate) fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// Builds Kafka headers from (name, value) pairs.
pub fn headers_from<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs.into_iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v) }))
}

/// A header value as UTF-8, if present.
pub fn header_str<H: Headers>(headers: Option<&H>, name: &str) -> Option<String> {
    let h = headers?;
    h.iter().find(|x| x.key == name).and_then(|x| x.value).and_then(|v| std::str::from_utf8(v).ok()).map(str::to_owned)
}
