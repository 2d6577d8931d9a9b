//! Who is calling: bearer JWTs (OAuth 2.0 / OIDC access tokens) checked
//! against the issuer's JWKS, and the principal they name.
//!
//! * **Signatures** with the issuer's public keys only: RS256/384/512,
//!   PS256/384/512, ES256/384 and EdDSA. `none` and HMAC are refused (an HMAC
//!   "signed" with a public key is the classic confusion attack), as is a key
//!   whose family or declared `alg` does not match the token's.
//! * **Claims**: `iss` and `aud` must be the configured ones; `exp` is
//!   required; `exp` and `nbf` are judged with [`LEEWAY`] for clock skew.
//! * **Keys** are fetched from the JWKS URL at start and cached. A token
//!   whose `kid` is unknown makes one refetch (key rotation), at most once per
//!   [`REFETCH_AFTER`], so unknown kids cannot make this process hammer the
//!   issuer; the cache is also renewed when it is older than [`KEYS_MAX_AGE`]
//!   (removed keys stop working). If the issuer cannot be reached and no
//!   cached key fits, the answer is "unavailable" (retry), not "bad token".
//! * **The principal**: `sub` (or, for client-credentials tokens without
//!   one, `client_id` / `azp`); scopes from `scope` (space-separated) or
//!   `scp` (string or array); the regions it may see from a configurable
//!   claim (absent: every region).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// An unknown `kid` refetches the JWKS at most this often.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// Cached keys older than this are fetched again before they are used.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// How long a JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The algorithms accepted: asymmetric signatures only.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The scopes of the orders API.
pub mod scopes {
    /// `GET /orders/{id}`, `GET /orders/search`.
    pub const ORDERS_READ: &str = "orders:read";
    /// `POST /orders`.
    pub const ORDERS_WRITE: &str = "orders:write";
    /// `POST /orders/{id}/status`.
    pub const ORDERS_STATUS: &str = "orders:status";
}

/// What a principal may do on `/ops`; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpsRole {
    /// `ops:read`: lists, one saga, overview, drain, jobs, audit.
    Read,
    /// `ops:act`: actions on one saga (not release / skip_poison / migrate), the timeout sweep.
    Act,
    /// `ops:admin`: bulk actions, release, skip_poison and migrate.
    Admin,
}

impl OpsRole {
    /// The scope that grants it.
    pub fn scope(self) -> &'static str {
        match self {
            OpsRole::Read => "ops:read",
            OpsRole::Act => "ops:act",
            OpsRole::Admin => "ops:admin",
        }
    }

    /// The highest role a principal's scopes grant.
    pub fn of(p: &Principal) -> Option<OpsRole> {
        [OpsRole::Admin, OpsRole::Act, OpsRole::Read].into_iter().find(|r| p.has_scope(r.scope()))
    }

    /// `read`, `act` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            OpsRole::Read => "read",
            OpsRole::Act => "act",
            OpsRole::Admin => "admin",
        }
    }

    /// `read`, `act` or `admin`.
    pub fn parse(s: &str) -> Option<OpsRole> {
        match s {
            "read" => Some(OpsRole::Read),
            "act" => Some(OpsRole::Act),
            "admin" => Some(OpsRole::Admin),
            _ => None,
        }
    }
}

/// A named `/ops` credential: a bearer secret known only by its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct OpsCredential {
    /// Who uses it (the audited actor), e.g. `deploy-bot`.
    pub name: String,
    pub role: OpsRole,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
}

impl std::fmt::Debug for OpsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsCredential").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

impl OpsCredential {
    /// Parses `name:role:sha256-hex`.
    pub fn parse(s: &str) -> Result<OpsCredential, String> {
        let mut parts = s.trim().splitn(3, ':');
        let (name, role, hex_digest) = (parts.next(), parts.next(), parts.next());
        let (Some(name), Some(role), Some(hex_digest)) = (name, role, hex_digest) else {
            return Err("an ops credential is name:role:sha256-hex".into());
        };
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        if !valid_name {
            return Err(format!("ops credential name {name:?}: 1 to 64 of A-Z a-z 0-9 - _ . @"));
        }
        let role =
            OpsRole::parse(role).ok_or_else(|| format!("ops credential {name}: role must be read, act or admin"))?;
        let digest: [u8; 32] = hex::decode(hex_digest).ok().and_then(|d| d.try_into().ok()).ok_or_else(|| {
            format!("ops credential {name}: the third part must be the secret's SHA-256 in hex (64 digits)")
        })?;
        Ok(OpsCredential { name: name.to_owned(), role, digest })
    }

    /// The credential whose secret this is, compared in constant time
    /// against every one (how many match does not leak which).
    pub fn find<'a>(all: &'a [OpsCredential], secret: &str) -> Option<&'a OpsCredential> {
        use sha2::Digest as _;
        let d: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for c in all {
            if constant_time_eq(&c.digest, &d) && found.is_none() {
                found = Some(c);
            }
        }
        found
    }
}

/// Compares two secrets in constant time (the length is not secret).
pub fn constant_time_eq(given: &[u8], want: &[u8]) -> bool {
    let mut diff = given.len() ^ want.len();
    for (i, byte) in want.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ byte);
    }
    diff == 0
}

/// What the verifier is configured with.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// The claim listing the tenant regions a principal may see.
    pub region_claim: String,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("a bearer token is required")]
    Missing,
    /// Not a JWT, or a header or claims that do not parse.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `none`, HMAC, or an algorithm the key is not for.
    #[error("the token's signing algorithm is not accepted")]
    Algorithm,
    /// No key of the issuer has this `kid` (after a refetch).
    #[error("the token is signed with a key the issuer does not publish")]
    UnknownKey,
    /// Signature, issuer, audience, expiry or not-before failed.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// The token names no subject or client.
    #[error("the token names no subject")]
    NoSubject,
    /// The issuer's keys could not be fetched and none cached fits: retry.
    #[error("the identity provider's keys cannot be fetched: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    /// Whether retrying later may succeed (the client's token is not at fault).
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable(_))
    }
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`, or `client_id` / `azp` for a client without a subject.
    pub subject: String,
    pub scopes: BTreeSet<String>,
    /// The tenant regions it may see; `None`: every region.
    pub regions: Option<BTreeSet<String>>,
}

/// The subject and scopes, never the token.
impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .field("regions", &self.regions)
            .finish()
    }
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// Whether it may see orders of this tenant region.
    pub fn may_see_region(&self, region: &str) -> bool {
        self.regions.as_ref().is_none_or(|r| r.contains(region))
    }
}

/// The claims read from an access token (beyond those `Validation` checks).
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    client_id: Option<String>,
    azp: Option<String>,
    scope: Option<String>,
    scp: Option<StringOrList>,
    #[serde(flatten)]
    other: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn items(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => s.split_whitespace().map(str::to_owned).collect(),
            StringOrList::Many(v) => v,
        }
    }
}

/// The principal a validated token's claims name.
fn principal_of(claims: Claims, region_claim: &str) -> Result<Principal, AuthError> {
    let subject = [claims.sub, claims.client_id, claims.azp]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .ok_or(AuthError::NoSubject)?;
    let mut scopes: BTreeSet<String> = claims.scope.unwrap_or_default().split_whitespace().map(str::to_owned).collect();
    scopes.extend(claims.scp.map(StringOrList::items).unwrap_or_default());
    let regions = match claims.other.get(region_claim) {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<StringOrList>(v.clone())
                .map_err(|_| AuthError::Invalid(format!("{region_claim} is neither a string nor a list of strings")))?
                .items()
                .into_iter()
                .collect(),
        ),
    };
    Ok(Principal { subject, scopes, regions })
}

/// One usable key of the issuer.
struct Key {
    key: DecodingKey,
    /// The `alg` the JWK declares, if any: then only that one.
    alg: Option<Algorithm>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Key>,
    /// Keys published without a `kid` (usable only when a token has none).
    anonymous: Vec<Key>,
    fetched_at: Option<Instant>,
}

/// Verifies bearer tokens; shared by every request (cheap to share via `Arc`).
pub struct JwtVerifier {
    settings: AuthSettings,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// One fetch at a time: requests that find the keys stale wait for it
    /// instead of each asking the issuer, and share its failure. Holds the
    /// last fetch's error.
    fetching: tokio::sync::Mutex<Option<String>>,
    /// Fetches started so far (a waiter sees whether one ran meanwhile).
    fetches: std::sync::atomic::AtomicU64,
}

impl JwtVerifier {
    pub fn new(settings: AuthSettings) -> Result<JwtVerifier, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
        Ok(JwtVerifier {
            settings,
            http,
            keys: RwLock::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(None),
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Fetches the issuer's keys now (at start: a misconfiguration shows at once).
    pub async fn refresh(&self) -> Result<usize, AuthError> {
        let set = self.fetch().await?;
        let (by_kid, anonymous) = usable_keys(&set);
        let n = by_kid.len() + anonymous.len();
        *self.keys.write().await = Keys { by_kid, anonymous, fetched_at: Some(Instant::now()) };
        Ok(n)
    }

    async fn fetch(&self) -> Result<JwkSet, AuthError> {
        let unavailable = |e: reqwest::Error| AuthError::KeysUnavailable(e.without_url().to_string());
        let resp = self.http.get(&self.settings.jwks_url).send().await.map_err(unavailable)?;
        let resp = resp.error_for_status().map_err(unavailable)?;
        resp.json::<JwkSet>().await.map_err(unavailable)
    }

    /// The principal of a bearer token, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        principal_of(self.verified::<Claims>(token).await?, &self.settings.region_claim)
    }

    /// Every claim of a token whose signature, `iss`, `aud`, `exp` and `nbf`
    /// passed (an OpenID Connect ID token: the caller checks `nonce` and
    /// reads what it needs).
    pub async fn verify_claims(&self, token: &str) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
        self.verified(token).await
    }

    async fn verified<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(AuthError::Algorithm);
        }
        // None yet, or older than KEYS_MAX_AGE: fetch (once for all waiting requests).
        self.refresh_if_due(KEYS_MAX_AGE).await?;
        let found = self.decode(token, header.kid.as_deref(), header.alg).await;
        if matches!(found, Err(AuthError::UnknownKey)) {
            // Perhaps rotated since the last fetch.
            self.refresh_if_due(REFETCH_AFTER).await?;
            return self.decode(token, header.kid.as_deref(), header.alg).await;
        }
        found
    }

    /// Refetches unless the keys were fetched less than `after` ago. A
    /// failure keeps the cached keys (they may still be valid).
    async fn refresh_if_due(&self, after: Duration) -> Result<(), AuthError> {
        use std::sync::atomic::Ordering::SeqCst;
        let due = || async { self.keys.read().await.fetched_at.is_none_or(|t| t.elapsed() >= after) };
        let seen = self.fetches.load(SeqCst);
        if !due().await {
            return Ok(());
        }
        let mut last_error = self.fetching.lock().await;
        // Another request fetched while this one waited: its result stands.
        if !due().await {
            return Ok(());
        }
        if self.fetches.load(SeqCst) != seen
            && let Some(e) = last_error.as_ref()
        {
            return Err(AuthError::KeysUnavailable(e.clone()));
        }
        self.fetches.fetch_add(1, SeqCst);
        let fetched = self.refresh().await;
        *last_error = fetched.as_ref().err().map(|e| match e {
            AuthError::KeysUnavailable(why) => why.clone(),
            other => other.to_string(),
        });
        match fetched {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the identity provider's keys");
                let mut keys = self.keys.write().await;
                if keys.fetched_at.is_none() && keys.by_kid.is_empty() && keys.anonymous.is_empty() {
                    return Err(e);
                }
                // Not again before REFETCH_AFTER: an outage of the issuer must
                // not cost a request per token.
                keys.fetched_at = Some(Instant::now() - KEYS_MAX_AGE.saturating_sub(REFETCH_AFTER));
                Ok(())
            }
        }
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<T, AuthError> {
        let keys = self.keys.read().await;
        let candidates: Vec<&Key> = match kid {
            Some(kid) => keys.by_kid.get(kid).into_iter().collect(),
            None => keys.anonymous.iter().chain(keys.by_kid.values()).collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        let mut last = AuthError::Algorithm;
        for k in candidates {
            if k.alg.is_some_and(|a| a != alg) || !k.key.family().algorithms().contains(&alg) {
                continue;
            }
            match jsonwebtoken::decode::<T>(token, &k.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = invalid(e),
            }
        }
        Err(last)
    }
}

fn invalid(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    let why = match e.kind() {
        K::InvalidSignature => "bad signature",
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not valid yet (nbf)",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::MissingRequiredClaim(_) => "a required claim (exp, iss, aud) is missing",
        K::InvalidAlgorithm => return AuthError::Algorithm,
        K::Json(_) | K::Base64(_) | K::Utf8(_) | K::InvalidToken => return AuthError::Malformed,
        _ => "rejected",
    };
    AuthError::Invalid(why.to_owned())
}

/// The JWKS's signature keys this verifier can use (HMAC `oct` keys and
/// encryption keys are ignored).
fn usable_keys(set: &JwkSet) -> (HashMap<String, Key>, Vec<Key>) {
    let mut by_kid = HashMap::new();
    let mut anonymous = Vec::new();
    for jwk in &set.keys {
        let Some(key) = usable(jwk) else { continue };
        match &jwk.common.key_id {
            Some(kid) => {
                by_kid.insert(kid.clone(), key);
            }
            None => anonymous.push(key),
        }
    }
    (by_kid, anonymous)
}

fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(a.to_string().parse::<Algorithm>().ok().filter(|a| ACCEPTED.contains(a))?),
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { key, alg })
}

pub mod oidc;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
