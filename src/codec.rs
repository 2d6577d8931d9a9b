//! Confluent wire-format Avro codec backed by a Schema Registry.
//!
//! Encoding: subjects follow the *TopicNameStrategy* (`{topic}-value`). At
//! startup [`Codec::register`] registers the `.avsc` of every message this daemon
//! publishes (idempotent on a real registry: an identical schema returns its
//! existing id) and verifies that the subjects of the messages it consumes, when
//! they exist, are readable with our schemas. After that, encoding never calls
//! the registry again (schemas and ids are cached by `schema_registry_converter`).
//!
//! Decoding: the writer's schema is fetched by the id in the payload (cached),
//! and the value is *resolved* to our reader schema, so a participant may add
//! fields with defaults without breaking us (BACKWARD compatibility).
//!
//! Errors are classified: a registry that cannot be reached is [`CodecError::Unavailable`]
//! (retry, never dead-letter), anything about the bytes or the schema is
//! [`CodecError::Invalid`] (a poison message).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::schema::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType, SubjectNameStrategy, SuppliedSchema};

use crate::contracts::{Message, MessageKind};

/// The `.avsc` text of every message, embedded at compile time from `schemas/`.
pub fn avsc(kind: MessageKind) -> &'static str {
    kind.avsc()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered 5xx. Retry later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The payload cannot be decoded as this message kind (bad bytes, unknown
    /// schema id, incompatible schema). Retrying will not help.
    #[error("invalid {kind} payload: {reason}")]
    Invalid { kind: &'static str, reason: String },
    /// A message could not be encoded with its own schema: a bug, not bad input.
    #[error("cannot encode {kind}: {reason}")]
    Encode { kind: &'static str, reason: String },
    /// Startup registration or verification failed; `transient` when the
    /// registry could not be reached or answered 5xx (worth retrying).
    #[error("schema registration for subject {subject} failed: {reason}")]
    Registration { subject: String, reason: String, transient: bool },
}

impl CodecError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::Unavailable(_) | CodecError::Registration { transient: true, .. })
    }
}

/// What a schema-registry failure was, from the registry's own error code
/// (Confluent's `error_code`, e.g. 40401) or the transport error, never from
/// message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegistryFault {
    /// 404xx: no such subject, version or schema id.
    NotFound,
    /// The registry answered with another HTTP error (401, 403, 422, 5xx, …).
    Http { server_error: bool },
    /// The registry could not be reached, or the client said to retry.
    Transport,
    /// Nothing to do with the registry: bytes that are not the wire format.
    Local,
}

fn fault_of(e: &SRCError) -> RegistryFault {
    let source = std::error::Error::source(e);
    if let Some(raw) = source.and_then(|s| s.downcast_ref::<RawError>()) {
        return match raw.error_code / 100 {
            404 => RegistryFault::NotFound,
            code => RegistryFault::Http { server_error: code >= 500 || e.retriable },
        };
    }
    if e.retriable || source.is_some_and(|s| s.downcast_ref::<reqwest::Error>().is_some()) {
        RegistryFault::Transport
    } else {
        RegistryFault::Local
    }
}

fn registration_error(subject: String, e: &SRCError) -> CodecError {
    let transient = matches!(fault_of(e), RegistryFault::Transport | RegistryFault::Http { server_error: true });
    CodecError::Registration { subject, reason: describe(e), transient }
}

/// Subject name for the value of `topic` (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct Codec {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SrSettings,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    /// Reader schemas, parsed from the embedded `.avsc` files.
    schemas: HashMap<MessageKind, Schema>,
}

impl Codec {
    pub fn new(registry_url: &str, timeout: Duration) -> Result<Codec, CodecError> {
        let settings = SrSettings::new_builder(registry_url.trim_end_matches('/').to_owned())
            .set_timeout(timeout)
            .build()
            .map_err(|e| CodecError::Registration { subject: "-".into(), reason: e.to_string(), transient: false })?;
        let mut schemas = HashMap::new();
        for &kind in MessageKind::ALL {
            let schema = Schema::parse_str(avsc(kind)).map_err(|e| CodecError::Registration {
                subject: kind.schema_file(),
                reason: format!("embedded schema does not parse: {e}"),
                transient: false,
            })?;
            schemas.insert(kind, schema);
        }
        Ok(Codec {
            inner: Arc::new(Inner {
                encoder: AvroEncoder::new(settings.clone()),
                decoder: AvroDecoder::new(settings.clone()),
                settings,
                schemas,
            }),
        })
    }

    fn supplied(kind: MessageKind) -> SuppliedSchema {
        SuppliedSchema::new(None, SchemaType::Avro, avsc(kind).to_owned())
    }

    /// Registers the schema of `kind` under `{topic}-value`, returning the
    /// registry's id. Idempotent.
    pub async fn register(&self, kind: MessageKind, topic: &str) -> Result<u32, CodecError> {
        let subject = value_subject(topic);
        let registered = post_schema(&self.inner.settings, subject.clone(), Codec::supplied(kind))
            .await
            .map_err(|e| registration_error(subject.clone(), &e))?;
        Ok(registered.id)
    }

    /// Checks that the latest schema registered under `{topic}-value` (if any)
    /// can be read with our schema for `kind`. Returns `Ok(false)` when the
    /// subject does not exist yet (the producing service has not registered it).
    pub async fn verify_readable(&self, kind: MessageKind, topic: &str) -> Result<bool, CodecError> {
        let subject = value_subject(topic);
        let strategy = SubjectNameStrategy::TopicNameStrategy(topic.to_owned(), false);
        let latest = match schema_registry_converter::async_impl::schema_registry::get_schema_by_subject(
            &self.inner.settings,
            &strategy,
        )
        .await
        {
            Ok(s) => s,
            Err(e) if fault_of(&e) == RegistryFault::NotFound => return Ok(false),
            Err(e) => return Err(registration_error(subject, &e)),
        };
        let writer = Schema::parse_str(&latest.schema).map_err(|e| CodecError::Registration {
            subject: subject.clone(),
            reason: e.to_string(),
            transient: false,
        })?;
        SchemaCompatibility::can_read(&writer, &self.inner.schemas[&kind]).map_err(|e| CodecError::Registration {
            subject: subject.clone(),
            reason: format!("registered schema (id {}) is not readable with {}: {e}", latest.id, kind.schema_file()),
            transient: false,
        })?;
        Ok(true)
    }

    /// Encodes `msg` for `topic` in the Confluent wire format.
    pub async fn encode(&self, msg: &Message, topic: &str) -> Result<Vec<u8>, CodecError> {
        let kind = msg.kind();
        let value = msg.to_avro().map_err(|e| CodecError::Encode { kind: kind.name(), reason: e.to_string() })?;
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_owned(), false, Codec::supplied(kind));
        self.inner.encoder.encode_value(value, &strategy).await.map_err(|e| {
            if e.retriable {
                self.inner.encoder.remove_errors_from_cache();
                CodecError::Unavailable(describe(&e))
            } else {
                CodecError::Encode { kind: kind.name(), reason: describe(&e) }
            }
        })
    }

    /// Decodes a Confluent wire-format payload as `kind`.
    pub async fn decode(&self, kind: MessageKind, payload: Option<&[u8]>) -> Result<Message, CodecError> {
        let invalid = |reason: String| CodecError::Invalid { kind: kind.name(), reason };
        let Some(bytes) = payload else {
            return Err(invalid("empty payload (tombstone)".into()));
        };
        let decoded = match self.inner.decoder.decode(Some(bytes)).await {
            Ok(d) => d,
            Err(e) => {
                // Unknown schema ids (404) and malformed bytes are poison; a
                // registry that is down, or refuses us (5xx, 401, 403), is
                // the environment's problem, not the message's.
                return match fault_of(&e) {
                    RegistryFault::NotFound | RegistryFault::Local => Err(invalid(describe(&e))),
                    RegistryFault::Http { .. } | RegistryFault::Transport => {
                        self.inner.decoder.remove_errors_from_cache();
                        Err(CodecError::Unavailable(describe(&e)))
                    }
                };
            }
        };
        let reader = &self.inner.schemas[&kind];
        let resolved = decoded
            .value
            .resolve(reader)
            .map_err(|e| invalid(format!("writer schema cannot be resolved to {}: {e}", kind.schema_file())))?;
        Message::from_avro(kind, &resolved).map_err(|e| invalid(e.to_string()))
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(c) => format!("{}: {c}", e.error),
        None => e.error.clone(),
    }
}
