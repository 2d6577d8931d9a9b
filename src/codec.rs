//! Confluent wire-format Avro codec backed by a Schema Registry.
//!
//! Encoding: subjects follow the *TopicNameStrategy* (`{topic}-value`). The id
//! a message is encoded with is the registry's id of *our* `.avsc` under that
//! subject: registered (idempotently) when auto-registration is on, only looked
//! up (`POST /subjects/{subject}`, which never registers) when it is off. At
//! startup [`Codec::register`] registers the `.avsc` of every message this
//! daemon publishes and [`Codec::verify_readable`] checks the subjects of the
//! messages it consumes.
//!
//! Decoding: the writer's schema is fetched by the id in the payload, its
//! record name must be the reader's (a `payment.void` record on the authorized
//! topic is poison, even though its fields would resolve), and the value is
//! *resolved* to our reader schema, so a participant may add fields with
//! defaults without breaking us (BACKWARD compatibility).
//!
//! **Only successes are cached** (subject → id, id → schema): a registry that
//! failed once is asked again on the next call, so a 504, a 429, a 401 during a
//! credential rotation or a 404 from a lagging follower costs one retry, never
//! a restart. Errors are classified by HTTP status and transport, never by
//! text: [`CodecError::Unavailable`] (retry, never dead-letter) or
//! [`CodecError::Invalid`] (a poison message).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::writer::datum::GenericDatumWriter;
use reqwest::StatusCode;

use crate::contracts::{Message, MessageKind};

/// The `.avsc` text of every message, embedded at compile time from `schemas/`.
pub fn avsc(kind: MessageKind) -> &'static str {
    kind.avsc()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached, timed out, or answered an error that
    /// may pass (5xx, 429, 401/403, or 404 where the schema should exist).
    /// Retry later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The payload cannot be decoded as this message kind (bad bytes, unknown
    /// schema id, another record, incompatible schema). Retrying will not help.
    #[error("invalid {kind} payload: {reason}")]
    Invalid { kind: &'static str, reason: String },
    /// A message could not be encoded with its own schema: a bug, not bad input.
    #[error("cannot encode {kind}: {reason}")]
    Encode { kind: &'static str, reason: String },
    /// Startup registration or verification failed; `transient` when the
    /// registry could not be reached or answered an error that may pass.
    #[error("schema registration for subject {subject} failed: {reason}")]
    Registration { subject: String, reason: String, transient: bool },
}

impl CodecError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::Unavailable(_) | CodecError::Registration { transient: true, .. })
    }
}

/// What a schema-registry call's failure was, from the HTTP status or the
/// transport, never from message text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RegistryFault {
    /// 404: no such subject, version, schema or id.
    NotFound(String),
    /// An answer that says the request itself is wrong (400, 409, 415, 422):
    /// asking again will get the same answer.
    Refused(String),
    /// Not reachable, timed out, 5xx, 429, 401/403 (credentials rotating),
    /// 408, or an answer that is not the registry's JSON: may pass.
    Transient(String),
}

impl RegistryFault {
    fn from_status(status: StatusCode, body: &str) -> RegistryFault {
        let what = format!("HTTP {status}: {}", body.chars().take(300).collect::<String>());
        match status.as_u16() {
            404 => RegistryFault::NotFound(what),
            400 | 409 | 415 | 422 => RegistryFault::Refused(what),
            _ => RegistryFault::Transient(what),
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, RegistryFault::Transient(_))
    }

    fn text(&self) -> &str {
        match self {
            RegistryFault::NotFound(t) | RegistryFault::Refused(t) | RegistryFault::Transient(t) => t,
        }
    }
}

fn registration_error(subject: &str, e: &RegistryFault) -> CodecError {
    CodecError::Registration { subject: subject.to_owned(), reason: e.text().to_owned(), transient: e.is_transient() }
}

/// Subject name for the value of `topic` (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// The few Schema Registry calls the codec makes.
struct Registry {
    base: String,
    http: reqwest::Client,
    /// HTTP basic auth (user, password) on every call.
    basic: Option<(String, String)>,
}

/// How the codec reaches a secured registry.
#[derive(Clone, Default)]
pub struct RegistryAccess {
    /// HTTP basic auth: user and password (Confluent Cloud: API key and secret).
    pub basic: Option<(String, String)>,
    /// PEM CA certificates that sign the registry's certificate (added to the system's).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RegistryAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAccess")
            .field("basic", &self.basic.as_ref().map(|(u, _)| (u, "[redacted]")))
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct IdAnswer {
    id: u32,
}

#[derive(serde::Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(default)]
    id: u32,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

impl Registry {
    async fn call<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, RegistryFault> {
        let req = match &self.basic {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        };
        let resp = req
            .header(reqwest::header::ACCEPT, "application/vnd.schemaregistry.v1+json, application/json")
            .send()
            .await
            // Without the URL: it may carry credentials (user:password@host).
            .map_err(|e| RegistryFault::Transient(format!("registry request failed: {}", e.without_url())))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| RegistryFault::Transient(format!("registry answer cut: {}", e.without_url())))?;
        if !status.is_success() {
            return Err(RegistryFault::from_status(status, &body));
        }
        serde_json::from_str(&body)
            .map_err(|e| RegistryFault::Transient(format!("registry answer is not the expected JSON: {e}")))
    }

    fn schema_body(avsc: &str) -> serde_json::Value {
        serde_json::json!({ "schema": avsc })
    }

    /// Registers `avsc` under `subject` (idempotent: an identical schema gets its existing id).
    async fn register(&self, subject: &str, avsc: &str) -> Result<u32, RegistryFault> {
        let url = format!("{}/subjects/{}/versions", self.base, subject);
        let a: IdAnswer = self.call(self.http.post(url).json(&Self::schema_body(avsc))).await?;
        Ok(a.id)
    }

    /// The id `avsc` has under `subject`, without registering it.
    async fn lookup(&self, subject: &str, avsc: &str) -> Result<u32, RegistryFault> {
        let url = format!("{}/subjects/{}", self.base, subject);
        let a: IdAnswer = self.call(self.http.post(url).json(&Self::schema_body(avsc))).await?;
        Ok(a.id)
    }

    async fn latest(&self, subject: &str) -> Result<SchemaAnswer, RegistryFault> {
        let url = format!("{}/subjects/{}/versions/latest", self.base, subject);
        self.call(self.http.get(url)).await
    }

    async fn by_id(&self, id: u32) -> Result<SchemaAnswer, RegistryFault> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        self.call(self.http.get(url)).await
    }
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct Codec {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// Register our schema on first encode (true), or only look its id up.
    auto_register: bool,
    /// Reader schemas, parsed from the embedded `.avsc` files.
    schemas: HashMap<MessageKind, Schema>,
    /// Successes only: (subject, kind) → id of our schema under it.
    ids: RwLock<HashMap<(String, MessageKind), u32>>,
    /// Successes only: writer schemas by id. Bounded by the registry's own
    /// schemas: an unknown id is never inserted.
    writers: RwLock<HashMap<u32, Arc<Schema>>>,
}

/// Magic byte of the Confluent wire format.
const MAGIC: u8 = 0;

impl Codec {
    /// A codec that registers our schemas on first use (the registry's default
    /// for producers). See [`Codec::with_auto_register`].
    pub fn new(registry_url: &str, timeout: Duration) -> Result<Codec, CodecError> {
        Codec::with_auto_register(registry_url, timeout, true)
    }

    /// `auto_register = false`: encoding looks up the id of our schema under
    /// the subject and never registers (a read-only registry, or subjects
    /// registered by CI); an unregistered schema is a transient error that
    /// holds the rows until it is registered.
    pub fn with_auto_register(registry_url: &str, timeout: Duration, auto_register: bool) -> Result<Codec, CodecError> {
        Codec::with_access(registry_url, timeout, auto_register, RegistryAccess::default())
    }

    /// A codec for a registry that needs credentials or a private CA.
    pub fn with_access(
        registry_url: &str,
        timeout: Duration,
        auto_register: bool,
        access: RegistryAccess,
    ) -> Result<Codec, CodecError> {
        let config_error = |reason: String| CodecError::Registration { subject: "-".into(), reason, transient: false };
        let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        if let Some(pem) = &access.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| config_error(format!("registry CA: {}", e.without_url())))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| config_error(e.to_string()))?;
        let base = registry_url.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base).map_err(|e| config_error(format!("registry URL: {e}")))?;
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
                registry: Registry { base, http, basic: access.basic },
                auto_register,
                schemas,
                ids: RwLock::default(),
                writers: RwLock::default(),
            }),
        })
    }

    /// Registers the schema of `kind` under `{topic}-value`, returning the
    /// registry's id. Idempotent.
    pub async fn register(&self, kind: MessageKind, topic: &str) -> Result<u32, CodecError> {
        let subject = value_subject(topic);
        let id =
            self.inner.registry.register(&subject, avsc(kind)).await.map_err(|e| registration_error(&subject, &e))?;
        self.remember_id(subject, kind, id);
        Ok(id)
    }

    /// Checks that the latest schema registered under `{topic}-value` (if any)
    /// can be read with our schema for `kind`. Returns `Ok(false)` when the
    /// subject does not exist yet (the producing service has not registered it).
    pub async fn verify_readable(&self, kind: MessageKind, topic: &str) -> Result<bool, CodecError> {
        let subject = value_subject(topic);
        let latest = match self.inner.registry.latest(&subject).await {
            Ok(s) => s,
            Err(RegistryFault::NotFound(_)) => return Ok(false),
            Err(e) => return Err(registration_error(&subject, &e)),
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

    fn remember_id(&self, subject: String, kind: MessageKind, id: u32) {
        if let Ok(mut ids) = self.inner.ids.write() {
            ids.insert((subject, kind), id);
        }
    }

    /// The id to encode `kind` with on `topic`: cached, else registered or
    /// looked up. Every failure is transient for the row being encoded (its
    /// fix is in the registry, not in the row) and nothing of it is cached.
    async fn schema_id(&self, kind: MessageKind, topic: &str) -> Result<u32, CodecError> {
        let subject = value_subject(topic);
        let cached = self.inner.ids.read().ok().and_then(|ids| ids.get(&(subject.clone(), kind)).copied());
        if let Some(id) = cached {
            return Ok(id);
        }
        let registry = &self.inner.registry;
        let found = if self.inner.auto_register {
            registry.register(&subject, avsc(kind)).await
        } else {
            registry.lookup(&subject, avsc(kind)).await
        };
        match found {
            Ok(id) => {
                self.remember_id(subject, kind, id);
                Ok(id)
            }
            Err(RegistryFault::NotFound(t)) => Err(CodecError::Unavailable(format!(
                "{} is not registered under {subject} (auto-registration is off): {t}",
                kind.schema_file()
            ))),
            Err(e) => Err(CodecError::Unavailable(format!("{subject}: {}", e.text()))),
        }
    }

    /// Encodes `msg` for `topic` in the Confluent wire format.
    pub async fn encode(&self, msg: &Message, topic: &str) -> Result<Vec<u8>, CodecError> {
        let kind = msg.kind();
        let encode_error = |reason: String| CodecError::Encode { kind: kind.name(), reason };
        let value = msg.to_avro().map_err(|e| encode_error(e.to_string()))?;
        let schema = &self.inner.schemas[&kind];
        let datum = GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(|e| encode_error(e.to_string()))?;
        let id = self.schema_id(kind, topic).await?;
        let mut out = Vec::with_capacity(5 + datum.len());
        out.push(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// The writer schema of `id`: cached, else fetched. A 404 is poison for
    /// this message and is not cached (a lagging registry follower may know
    /// the id a moment later).
    async fn writer(&self, kind: MessageKind, id: u32) -> Result<Arc<Schema>, CodecError> {
        let cached = self.inner.writers.read().ok().and_then(|w| w.get(&id).cloned());
        if let Some(s) = cached {
            return Ok(s);
        }
        let invalid = |reason: String| CodecError::Invalid { kind: kind.name(), reason };
        let answer = match self.inner.registry.by_id(id).await {
            Ok(a) => a,
            Err(RegistryFault::NotFound(t)) => return Err(invalid(format!("unknown schema id {id}: {t}"))),
            Err(RegistryFault::Refused(t)) => return Err(invalid(format!("schema id {id}: {t}"))),
            Err(e @ RegistryFault::Transient(_)) => return Err(CodecError::Unavailable(e.text().to_owned())),
        };
        if let Some(t) = answer.schema_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("AVRO")) {
            return Err(invalid(format!("schema id {id} is a {t} schema, not Avro")));
        }
        let schema = Arc::new(
            Schema::parse_str(&answer.schema).map_err(|e| invalid(format!("schema id {id} does not parse: {e}")))?,
        );
        if let Ok(mut w) = self.inner.writers.write() {
            w.insert(id, schema.clone());
        }
        Ok(schema)
    }

    /// Decodes a Confluent wire-format payload as `kind`.
    pub async fn decode(&self, kind: MessageKind, payload: Option<&[u8]>) -> Result<Message, CodecError> {
        let invalid = |reason: String| CodecError::Invalid { kind: kind.name(), reason };
        let Some(bytes) = payload else {
            return Err(invalid("empty payload (tombstone)".into()));
        };
        let (id, mut datum) = match bytes {
            [MAGIC, a, b, c, d, rest @ ..] => (u32::from_be_bytes([*a, *b, *c, *d]), rest),
            _ => return Err(invalid("not the Confluent wire format (magic byte 0 and a 4-byte schema id)".into())),
        };
        let writer = self.writer(kind, id).await?;
        let reader = &self.inner.schemas[&kind];
        check_record_name(&writer, reader).map_err(invalid)?;
        let value = GenericDatumReader::builder(&writer)
            .reader_schema(reader)
            .build()
            .and_then(|r| r.read_value(&mut datum))
            .map_err(|e| invalid(format!("writer schema id {id} cannot be resolved to {}: {e}", kind.schema_file())))?;
        if !datum.is_empty() {
            return Err(invalid(format!("{} bytes after the record", datum.len())));
        }
        Message::from_avro(kind, &value).map_err(|e| invalid(e.to_string()))
    }
}

/// Avro resolution matches fields by name and ignores the record's own name,
/// so any record with a superset of our fields would resolve. The record names
/// are part of the contract: the writer's must be the reader's, or one of the
/// reader's aliases.
fn check_record_name(writer: &Schema, reader: &Schema) -> Result<(), String> {
    let (Some(w), Some(r)) = (writer.name(), reader.name()) else {
        return Err("the writer schema is not a named record".into());
    };
    let aliased = match reader {
        Schema::Record(rec) => {
            rec.aliases.iter().flatten().any(|a| a.fully_qualified_name(r.namespace()).as_ref() == w)
        }
        _ => false,
    };
    if w == r || aliased {
        Ok(())
    } else {
        Err(format!("the writer's record is {}, not {}", w.fullname(None), r.fullname(None)))
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
