//! A test identity provider: signing keys generated at start (RS256, ES256,
//! EdDSA), a JWKS endpoint over HTTP, and access tokens minted by hand — the
//! signer is aws-lc-rs directly, not the verifier's JWT library, so a test
//! cannot pass because both sides share a bug. It also mints the forgeries a
//! verifier must refuse (`alg: none`, HMAC keyed with a public key).
//!
//! **Tests only** (compiled with the `dev-registry` feature).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::response::IntoResponse as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// The signature algorithms the provider can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

enum Secret {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

struct SigningKey {
    kid: String,
    alg: Alg,
    secret: Secret,
    published: bool,
}

impl SigningKey {
    fn generate(kid: String, alg: Alg) -> SigningKey {
        let secret = match alg {
            Alg::Rs256 => {
                Secret::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key generation"))
            }
            Alg::Es256 => {
                Secret::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key generation"))
            }
            Alg::EdDsa => Secret::Ed(Ed25519KeyPair::generate().expect("Ed25519 key generation")),
        };
        SigningKey { kid, alg, secret, published: true }
    }

    fn jwk(&self) -> Value {
        let mut jwk = match &self.secret {
            Secret::Rsa(k) => json!({
                "kty": "RSA",
                "n": B64.encode(k.public_key().modulus().big_endian_without_leading_zero()),
                "e": B64.encode(k.public_key().exponent().big_endian_without_leading_zero()),
            }),
            Secret::Ec(k) => {
                // Uncompressed point: 0x04 || x || y.
                let p = k.public_key().as_ref();
                json!({ "kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65]) })
            }
            Secret::Ed(k) => json!({ "kty": "OKP", "crv": "Ed25519", "x": B64.encode(k.public_key().as_ref()) }),
        };
        jwk["kid"] = json!(self.kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(self.alg.name());
        jwk
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.secret {
            Secret::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig).expect("RSA signature");
                sig
            }
            Secret::Ec(k) => k.sign(&rng, message).expect("ECDSA signature").as_ref().to_vec(),
            Secret::Ed(k) => k.sign(message).as_ref().to_vec(),
        }
    }

    /// The bytes of the public key (what an HMAC confusion attack keys with).
    fn public_bytes(&self) -> Vec<u8> {
        match &self.secret {
            Secret::Rsa(k) => k.public_key().as_ref().to_vec(),
            Secret::Ec(k) => k.public_key().as_ref().to_vec(),
            Secret::Ed(k) => k.public_key().as_ref().to_vec(),
        }
    }
}

struct State {
    keys: Mutex<Vec<SigningKey>>,
    fetches: AtomicUsize,
    down: AtomicBool,
}

/// A running test identity provider.
#[derive(Clone)]
pub struct TestIdp {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    state: Arc<State>,
}

impl TestIdp {
    /// Serves `GET /jwks` on a free loopback port, with one published ES256 key (`k-es`).
    pub async fn spawn() -> std::io::Result<TestIdp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            keys: Mutex::new(vec![SigningKey::generate("k-es".into(), Alg::Es256)]),
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        let served = state.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let s = served.clone();
                async move {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    if s.down.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    let keys = s.keys.lock().unwrap_or_else(|p| p.into_inner());
                    let jwks: Vec<Value> = keys.iter().filter(|k| k.published).map(SigningKey::jwk).collect();
                    axum::Json(json!({ "keys": jwks })).into_response()
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TestIdp {
            issuer: format!("http://{addr}"),
            audience: "order-saga".into(),
            jwks_url: format!("http://{addr}/jwks"),
            state,
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Vec<SigningKey>> {
        self.state.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Generates a key; published in the JWKS when `published`.
    pub fn add_key(&self, kid: &str, alg: Alg, published: bool) {
        let mut key = SigningKey::generate(kid.into(), alg);
        key.published = published;
        self.keys().push(key);
    }

    /// Publishes a key added unpublished (a rotation).
    pub fn publish(&self, kid: &str) {
        self.keys().iter_mut().filter(|k| k.kid == kid).for_each(|k| k.published = true);
    }

    /// Makes the JWKS endpoint answer 503 (or serve again).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// How many times the JWKS was requested.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Valid claims for `sub` with these space-separated scopes, expiring in 5 minutes.
    pub fn claims(&self, sub: &str, scope: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({ "iss": self.issuer, "aud": self.audience, "sub": sub, "scope": scope,
                "iat": now, "nbf": now, "exp": now + 300 })
    }

    /// A token signed with key `kid` (its own algorithm).
    pub fn token(&self, kid: &str, claims: &Value) -> String {
        let keys = self.keys();
        let key = keys.iter().find(|k| k.kid == kid).expect("no such test key");
        let header = json!({ "alg": key.alg.name(), "typ": "JWT", "kid": kid });
        let message = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = key.sign(message.as_bytes());
        format!("{message}.{}", B64.encode(sig))
    }

    /// An ES256 token (the default key `k-es`).
    pub fn token_for(&self, sub: &str, scope: &str) -> String {
        self.token("k-es", &self.claims(sub, scope))
    }

    /// A forgery: HS256 keyed with the public key of `kid`, naming that `kid`.
    pub fn hmac_forgery(&self, kid: &str, claims: &Value) -> String {
        let keys = self.keys();
        let key = keys.iter().find(|k| k.kid == kid).expect("no such test key");
        let header = json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
        let message = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key.public_bytes()),
            message.as_bytes(),
        );
        format!("{message}.{}", B64.encode(mac.as_ref()))
    }

    /// A forgery: `alg: none`, no signature.
    pub fn unsigned(claims: &Value) -> String {
        let header = json!({ "alg": "none", "typ": "JWT" });
        format!("{}.{}.", B64.encode(header.to_string()), B64.encode(claims.to_string()))
    }
}
