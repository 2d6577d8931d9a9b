//! Signing operators in to the ops console with an OpenID Provider: the
//! authorization code flow with PKCE (RFC 7636, `S256`), `state` and `nonce`.
//!
//! * **Discovery**: the provider's endpoints and keys come from
//!   `{issuer}/.well-known/openid-configuration`, fetched on the first sign-in
//!   (and again after a failure), whose `issuer` must be the configured one.
//! * **The ID token** is checked like an access token ([`JwtVerifier`]: the
//!   provider's JWKS, asymmetric algorithms only, `iss`, `exp`, `nbf`), with
//!   this client as its audience (and as `azp` when it names one) and the
//!   `nonce` of this sign-in.
//! * **The operator**: the actor is `sub` (with the `preferred_username`,
//!   `email` or `name` in front when the token has one, so the audit trail
//!   reads as a person); the role is the highest of `ops:read`, `ops:act`,
//!   `ops:admin` found in a configurable claim (a dotted path, e.g.
//!   `realm_access.roles`; a list or a space-separated string). No role: no
//!   session.
//!
//! The pure parts (the authorization URL, PKCE, the operator a token names)
//! are functions of their inputs; [`OidcClient`] adds the two HTTP calls.

use base64::Engine as _;
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::{AuthError, AuthSettings, JwtVerifier, OpsRole};

/// How long the discovery and token requests may take.
const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the console's sign-in is configured with.
#[derive(Clone)]
pub struct OidcSettings {
    /// The provider's issuer identifier (discovery is under it).
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client (PKCE alone); otherwise sent with HTTP Basic.
    pub client_secret: Option<String>,
    /// The callback as registered at the provider; `None`: derived from the
    /// request's host (`https`, or `http` on a loopback host).
    pub redirect_url: Option<String>,
    /// Space-separated scopes asked for (`openid` is always among them).
    pub scopes: String,
    /// Where the ID token carries the operator's ops roles (dotted path).
    pub role_claim: String,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("role_claim", &self.role_claim)
            .finish_non_exhaustive()
    }
}

/// Why a sign-in through the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider cannot be reached or answers 5xx: try again later.
    #[error("the identity provider cannot be reached: {0}")]
    Unavailable(String),
    /// The discovery document is not what this client needs (wrong issuer,
    /// missing endpoints): a configuration error.
    #[error("the identity provider's discovery document is unusable: {0}")]
    Discovery(String),
    /// The provider refused to trade the code (expired, used, wrong verifier).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The ID token failed its checks.
    #[error("the ID token is not valid: {0}")]
    IdToken(#[from] AuthError),
    /// The ID token is not for this sign-in (replayed or injected).
    #[error("the ID token's nonce is not this sign-in's")]
    Nonce,
}

impl OidcError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, OidcError::Unavailable(_)) || matches!(self, OidcError::IdToken(e) if e.is_transient())
    }
}

/// One sign-in in progress: random `state`, `nonce` and PKCE verifier, kept
/// by the daemon until the provider sends the browser back.
#[derive(Clone, PartialEq, Eq)]
pub struct Attempt {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attempt { .. }")
    }
}

fn random_b64(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Attempt {
    /// Fresh random values (256 bits each; the verifier is 43 characters,
    /// the minimum RFC 7636 allows and plenty).
    pub fn new() -> Attempt {
        Attempt { state: random_b64(32), nonce: random_b64(32), verifier: random_b64(32) }
    }

    /// The PKCE `S256` challenge of the verifier.
    pub fn challenge(&self) -> String {
        pkce_challenge(&self.verifier)
    }
}

impl Default for Attempt {
    fn default() -> Attempt {
        Attempt::new()
    }
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The scopes to ask for: the configured ones, `openid` first and once.
pub fn scopes_of(configured: &str) -> String {
    let mut out = vec!["openid"];
    out.extend(configured.split_whitespace().filter(|s| *s != "openid"));
    out.join(" ")
}

/// Where to send the browser to sign in.
pub fn authorization_url(
    endpoint: &reqwest::Url,
    settings: &OidcSettings,
    attempt: &Attempt,
    redirect: &str,
) -> reqwest::Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", &scopes_of(&settings.scopes))
        .append_pair("state", &attempt.state)
        .append_pair("nonce", &attempt.nonce)
        .append_pair("code_challenge", &attempt.challenge())
        .append_pair("code_challenge_method", "S256");
    url
}

/// A person signed in at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// What the audit trail records: `sub`, with a readable name in front.
    pub actor: String,
    pub subject: String,
    /// `None`: the account has no ops role.
    pub role: Option<OpsRole>,
}

/// The claim at a dotted path (`realm_access.roles`), or a top-level claim
/// whose name contains dots.
fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// The operator a verified ID token names.
pub fn operator_of(claims: &Map<String, Value>, role_claim: &str) -> Result<Operator, AuthError> {
    let subject = claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(AuthError::NoSubject)?;
    let display = ["preferred_username", "email", "name"]
        .iter()
        .filter_map(|k| claims.get(*k).and_then(Value::as_str))
        .map(|s| s.chars().filter(|c| !c.is_control()).collect::<String>())
        .find(|s| !s.trim().is_empty());
    let mut actor = match display {
        Some(d) if d != subject => format!("{} <{subject}>", d.trim()),
        _ => subject.to_owned(),
    };
    if actor.chars().count() > 128 {
        actor = actor.chars().take(128).collect();
    }
    let granted: Vec<&str> = match claim_at(claims, role_claim) {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let role = [OpsRole::Admin, OpsRole::Act, OpsRole::Read].into_iter().find(|r| granted.contains(&r.scope()));
    Ok(Operator { actor, subject: subject.to_owned(), role })
}

/// Checks what only this client can: the nonce and, when present, `azp`.
pub fn check_id_token(claims: &Map<String, Value>, client_id: &str, nonce: &str) -> Result<(), OidcError> {
    let given = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if !crate::auth::constant_time_eq(given.as_bytes(), nonce.as_bytes()) {
        return Err(OidcError::Nonce);
    }
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != client_id => Err(OidcError::IdToken(AuthError::Invalid("azp is another client".into()))),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// The provider as discovered.
struct Provider {
    authorization_endpoint: reqwest::Url,
    token_endpoint: String,
    id_tokens: JwtVerifier,
}

/// The console's client of the OpenID Provider.
pub struct OidcClient {
    settings: OidcSettings,
    http: reqwest::Client,
    provider: tokio::sync::OnceCell<Provider>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl OidcClient {
    pub fn new(settings: OidcSettings) -> Result<OidcClient, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Unavailable(e.to_string()))?;
        Ok(OidcClient { settings, http, provider: tokio::sync::OnceCell::new() })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// What sessions signed in through this provider are bound to: changing
    /// the issuer or the client ends them.
    pub fn credential(&self) -> String {
        format!("oidc\0{}\0{}", self.settings.issuer, self.settings.client_id)
    }

    /// The provider's endpoints, discovered once (a failure is retried by
    /// the next sign-in).
    async fn provider(&self) -> Result<&Provider, OidcError> {
        self.provider.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Provider, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let unavailable = |e: reqwest::Error| OidcError::Unavailable(e.without_url().to_string());
        let resp = self.http.get(&url).send().await.map_err(unavailable)?;
        if resp.status().is_server_error() {
            return Err(OidcError::Unavailable(format!("discovery answered {}", resp.status())));
        }
        let d: Discovery = resp
            .error_for_status()
            .map_err(|e| OidcError::Discovery(e.without_url().to_string()))?
            .json()
            .await
            .map_err(|e| OidcError::Discovery(e.without_url().to_string()))?;
        if d.issuer != self.settings.issuer {
            return Err(OidcError::Discovery(format!(
                "it names the issuer {:?}, not the configured {:?}",
                d.issuer, self.settings.issuer
            )));
        }
        let authorization_endpoint = reqwest::Url::parse(&d.authorization_endpoint)
            .map_err(|_| OidcError::Discovery("authorization_endpoint is not a URL".into()))?;
        let id_tokens = JwtVerifier::new(AuthSettings {
            jwks_url: d.jwks_uri,
            issuer: d.issuer,
            audience: self.settings.client_id.clone(),
            region_claim: String::new(),
        })?;
        Ok(Provider { authorization_endpoint, token_endpoint: d.token_endpoint, id_tokens })
    }

    /// Where to send the browser for this attempt.
    pub async fn begin(&self, attempt: &Attempt, redirect: &str) -> Result<reqwest::Url, OidcError> {
        let p = self.provider().await?;
        Ok(authorization_url(&p.authorization_endpoint, &self.settings, attempt, redirect))
    }

    /// Trades the code for tokens and names the operator of the ID token.
    pub async fn finish(&self, code: &str, redirect: &str, verifier: &str, nonce: &str) -> Result<Operator, OidcError> {
        let p = self.provider().await?;
        // The serializer is not Send: build the body before any await.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect)
                .append_pair("code_verifier", verifier);
            if self.settings.client_secret.is_none() {
                form.append_pair("client_id", &self.settings.client_id);
            }
            form.finish()
        };
        let mut req = self.http.post(&p.token_endpoint);
        if let Some(secret) = &self.settings.client_secret {
            req = req.basic_auth(form_component(&self.settings.client_id), Some(form_component(secret)));
        }
        let resp = req
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_server_error() {
            return Err(OidcError::Unavailable(format!("the token endpoint answered {status}")));
        }
        if !status.is_success() {
            let why = body.get("error").and_then(Value::as_str).unwrap_or("error");
            return Err(OidcError::Refused(format!("{status} {why}")));
        }
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::Refused("the token response has no id_token (is `openid` granted?)".into()))?;
        let claims = p.id_tokens.verify_claims(id_token).await?;
        check_id_token(&claims, &self.settings.client_id, nonce)?;
        Ok(operator_of(&claims, &self.settings.role_claim)?)
    }
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before Basic.
fn form_component(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings() -> OidcSettings {
        OidcSettings {
            issuer: "https://idp.example.com".into(),
            client_id: "ops-console".into(),
            client_secret: Some("s3cret".into()),
            redirect_url: None,
            scopes: "profile roles openid".into(),
            role_claim: "roles".into(),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_pkce_challenge_is_the_unpadded_base64url_sha256_of_the_verifier() {
        // Computed independently: python3 -c "import hashlib,base64;
        // print(base64.urlsafe_b64encode(hashlib.sha256(b'dBjf…-cM').digest()).rstrip(b'='))"
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mJ92IZJ2M8e3OPCGTh5a-MtQTKh-cM"),
            "rYMKIuuNGoEcAdWqnwoL9BUA51Ll56D5pZa8brmW8jM"
        );
        let a = Attempt::new();
        assert_eq!(a.verifier.len(), 43);
        assert_ne!(a, Attempt::new(), "random each time");
        assert!(!format!("{a:?}").contains(&a.verifier), "Debug shows no secret");
    }

    #[test]
    fn the_authorization_url_carries_state_nonce_and_the_s256_challenge() {
        let a = Attempt::new();
        let endpoint = reqwest::Url::parse("https://idp.example.com/auth?tenant=x").unwrap();
        let url = authorization_url(&endpoint, &settings(), &a, "https://ops.example.com/ops/ui/callback");
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "x", "the endpoint's own query is kept");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "ops-console");
        assert_eq!(q["redirect_uri"], "https://ops.example.com/ops/ui/callback");
        assert_eq!(q["scope"], "openid profile roles");
        assert_eq!((q["state"].as_str(), q["nonce"].as_str()), (a.state.as_str(), a.nonce.as_str()));
        assert_eq!(q["code_challenge"], a.challenge());
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(!url.as_str().contains(&a.verifier), "the verifier never leaves the daemon");
        assert!(!url.as_str().contains("s3cret"));
    }

    #[test]
    fn the_operator_is_the_subject_with_a_readable_name_and_the_highest_role() {
        let op = operator_of(
            &claims(json!({"sub": "u-1", "preferred_username": "alice", "roles": ["ops:read", "ops:act"]})),
            "roles",
        )
        .unwrap();
        assert_eq!(op, Operator { actor: "alice <u-1>".into(), subject: "u-1".into(), role: Some(OpsRole::Act) });
        let op =
            operator_of(&claims(json!({"sub": "bob", "preferred_username": "bob", "roles": "ops:admin"})), "roles")
                .unwrap();
        assert_eq!((op.actor.as_str(), op.role), ("bob", Some(OpsRole::Admin)));
        let nested = json!({"sub": "u-2", "email": "c@example.com", "realm_access": {"roles": ["ops:read", "x"]}});
        let op = operator_of(&claims(nested), "realm_access.roles").unwrap();
        assert_eq!((op.actor.as_str(), op.role), ("c@example.com <u-2>", Some(OpsRole::Read)));
        let none = operator_of(&claims(json!({"sub": "m", "roles": ["admin", "ops:superuser"]})), "roles").unwrap();
        assert_eq!(none.role, None, "only ops:read, ops:act and ops:admin count");
        assert_eq!(operator_of(&claims(json!({"sub": "m", "roles": 7})), "roles").unwrap().role, None);
        assert!(matches!(operator_of(&claims(json!({"sub": ""})), "roles"), Err(AuthError::NoSubject)));
        let long = operator_of(&claims(json!({"sub": "s", "name": "x\n".repeat(200)})), "roles").unwrap();
        assert!(long.actor.chars().count() <= 128 && !long.actor.contains('\n'));
    }

    #[test]
    fn the_nonce_and_azp_must_be_this_sign_ins() {
        let c = claims(json!({"nonce": "n-1", "azp": "ops-console"}));
        assert!(check_id_token(&c, "ops-console", "n-1").is_ok());
        assert!(matches!(check_id_token(&c, "ops-console", "n-2"), Err(OidcError::Nonce)));
        assert!(matches!(check_id_token(&claims(json!({})), "ops-console", "n-1"), Err(OidcError::Nonce)));
        let other = claims(json!({"nonce": "n-1", "azp": "another-app"}));
        assert!(matches!(check_id_token(&other, "ops-console", "n-1"), Err(OidcError::IdToken(_))));
    }

    #[test]
    fn openid_is_asked_for_once_and_first() {
        assert_eq!(scopes_of(""), "openid");
        assert_eq!(scopes_of("email openid  profile"), "openid email profile");
    }

    #[test]
    fn settings_do_not_print_the_client_secret() {
        assert!(!format!("{:?}", settings()).contains("s3cret"));
    }
}
