//! The verifier against a test identity provider over HTTP: every rejection
//! path, rotation, and an issuer outage.

use serde_json::json;

use super::*;
use crate::devtools::idp::{Alg, TestIdp};

async fn setup() -> (TestIdp, JwtVerifier) {
    let idp = TestIdp::spawn().await.unwrap();
    let v = JwtVerifier::new(AuthSettings {
        jwks_url: idp.jwks_url.clone(),
        issuer: idp.issuer.clone(),
        audience: idp.audience.clone(),
        region_claim: "tenant_regions".into(),
    })
    .unwrap();
    (idp, v)
}

fn rejected(r: Result<Principal, AuthError>) -> AuthError {
    match r {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn tokens_of_every_accepted_algorithm_name_their_principal_and_scopes() {
    let (idp, v) = setup().await;
    idp.add_key("k-rs", Alg::Rs256, true);
    idp.add_key("k-ed", Alg::EdDsa, true);
    for kid in ["k-es", "k-rs", "k-ed"] {
        let p = v.verify(&idp.token(kid, &idp.claims("alice", "orders:read orders:write"))).await.unwrap();
        assert_eq!(p.subject, "alice", "{kid}");
        assert!(p.has_scope(scopes::ORDERS_READ) && p.has_scope(scopes::ORDERS_WRITE), "{kid}");
        assert!(!p.has_scope(scopes::ORDERS_STATUS), "{kid}");
        assert_eq!(p.regions, None, "no region claim: every region");
    }
}

#[tokio::test]
async fn scp_lists_client_ids_and_region_claims_are_read() {
    let (idp, v) = setup().await;
    let mut c = idp.claims("", "");
    c.as_object_mut().unwrap().remove("sub");
    c.as_object_mut().unwrap().remove("scope");
    c["client_id"] = json!("billing-service");
    c["scp"] = json!(["orders:read", "orders:status"]);
    c["tenant_regions"] = json!(["eu-west", "eu-central"]);
    let p = v.verify(&idp.token("k-es", &c)).await.unwrap();
    assert_eq!(p.subject, "billing-service");
    assert!(p.has_scope("orders:status"));
    assert!(p.may_see_region("eu-west") && !p.may_see_region("us-east"));
    c["tenant_regions"] = json!(42);
    assert!(matches!(rejected(v.verify(&idp.token("k-es", &c)).await), AuthError::Invalid(_)));
    c.as_object_mut().unwrap().remove("client_id");
    c["tenant_regions"] = json!("eu-west");
    assert!(matches!(rejected(v.verify(&idp.token("k-es", &c)).await), AuthError::NoSubject));
}

#[tokio::test]
async fn expired_early_wrong_issuer_and_wrong_audience_are_refused() {
    let (idp, v) = setup().await;
    let now = chrono::Utc::now().timestamp();
    let leeway = LEEWAY.as_secs() as i64;
    let cases = [
        ("exp", json!(now - leeway - 5), "expired"),
        ("nbf", json!(now + leeway + 60), "not valid yet (nbf)"),
        ("iss", json!("https://evil.example"), "wrong issuer"),
        ("aud", json!("another-api"), "wrong audience"),
    ];
    for (claim, value, why) in cases {
        let mut c = idp.claims("alice", "orders:read");
        c[claim] = value;
        match rejected(v.verify(&idp.token("k-es", &c)).await) {
            AuthError::Invalid(w) => assert_eq!(w, why, "{claim}"),
            other => panic!("{claim}: {other:?}"),
        }
    }
    // Within the leeway: a clock a little behind the issuer's is fine.
    let mut c = idp.claims("alice", "orders:read");
    c["exp"] = json!(now - leeway + 10);
    v.verify(&idp.token("k-es", &c)).await.unwrap();
    let mut c = idp.claims("alice", "orders:read");
    c.as_object_mut().unwrap().remove("exp");
    assert!(matches!(rejected(v.verify(&idp.token("k-es", &c)).await), AuthError::Invalid(_)), "exp is required");
}

#[tokio::test]
async fn forgeries_are_refused_none_hmac_with_the_public_key_a_bad_signature_garbage() {
    let (idp, v) = setup().await;
    idp.add_key("k-rs", Alg::Rs256, true);
    let c = idp.claims("mallory", "orders:read orders:write orders:status");
    assert!(matches!(rejected(v.verify(&TestIdp::unsigned(&c)).await), AuthError::Malformed | AuthError::Algorithm));
    for kid in ["k-es", "k-rs"] {
        assert!(matches!(rejected(v.verify(&idp.hmac_forgery(kid, &c)).await), AuthError::Algorithm), "{kid}");
    }
    // A valid token's claims swapped for others: the signature no longer fits.
    let good = idp.token("k-es", &idp.claims("alice", "orders:read"));
    let parts: Vec<&str> = good.split('.').collect();
    let other = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, c.to_string());
    let tampered = format!("{}.{other}.{}", parts[0], parts[2]);
    assert!(matches!(rejected(v.verify(&tampered).await), AuthError::Invalid(w) if w == "bad signature"));
    assert!(matches!(rejected(v.verify("not-a-jwt").await), AuthError::Malformed));
}

#[tokio::test]
async fn a_key_of_one_algorithm_does_not_verify_another() {
    let (idp, v) = setup().await;
    idp.add_key("k-ed", Alg::EdDsa, true);
    // An EdDSA token whose header claims the EC key's kid.
    let t = idp.token("k-ed", &idp.claims("alice", "orders:read"));
    let parts: Vec<&str> = t.split('.').collect();
    let header = json!({ "alg": "EdDSA", "kid": "k-es" }).to_string();
    let swapped = format!(
        "{}.{}.{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header),
        parts[1],
        parts[2]
    );
    assert!(matches!(rejected(v.verify(&swapped).await), AuthError::Algorithm));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_cannot_hammer_the_issuer() {
    let (idp, v) = setup().await;
    v.verify(&idp.token_for("alice", "orders:read")).await.unwrap();
    let fetched = idp.fetches();
    assert_eq!(fetched, 1, "the keys are cached");
    v.verify(&idp.token_for("alice", "orders:read")).await.unwrap();
    assert_eq!(idp.fetches(), fetched);
    // The issuer rotates: a key it publishes after our fetch.
    idp.add_key("k-new", Alg::EdDsa, false);
    idp.publish("k-new");
    // Fetched at most once per REFETCH_AFTER: the cache is younger, so the
    // new kid is unknown here until then. Age the cache to see the refetch.
    v.keys.write().await.fetched_at = Some(Instant::now() - REFETCH_AFTER);
    v.verify(&idp.token("k-new", &idp.claims("alice", "orders:read"))).await.unwrap();
    assert_eq!(idp.fetches(), fetched + 1, "one refetch for the new kid");
    // Tokens naming kids nobody publishes: one refetch per REFETCH_AFTER at most.
    idp.add_key("k-secret", Alg::Es256, false);
    for _ in 0..20 {
        let e = rejected(v.verify(&idp.token("k-secret", &idp.claims("mallory", "orders:read"))).await);
        assert!(matches!(e, AuthError::UnknownKey));
    }
    assert_eq!(idp.fetches(), fetched + 1, "no refetch within REFETCH_AFTER of the last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_find_the_keys_missing_share_one_fetch() {
    let (idp, v) = setup().await;
    let v = std::sync::Arc::new(v);
    let token = idp.token_for("alice", "orders:read");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (v, t) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&t).await.map(|p| p.subject) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "alice");
    }
    assert_eq!(idp.fetches(), 1, "one fetch for all of them");
}

#[tokio::test]
async fn an_issuer_outage_is_transient_before_the_first_fetch_and_harmless_after() {
    let (idp, v) = setup().await;
    idp.set_down(true);
    let e = rejected(v.verify(&idp.token_for("alice", "orders:read")).await);
    assert!(e.is_transient(), "{e:?}: the client's token is not at fault");
    idp.set_down(false);
    v.verify(&idp.token_for("alice", "orders:read")).await.unwrap();
    // Down again with the cache expired: the cached keys keep working.
    idp.set_down(true);
    v.keys.write().await.fetched_at = Some(Instant::now() - KEYS_MAX_AGE);
    v.verify(&idp.token_for("alice", "orders:read")).await.unwrap();
    let after = idp.fetches();
    v.verify(&idp.token_for("alice", "orders:read")).await.unwrap();
    assert_eq!(idp.fetches(), after, "a failed fetch is not retried on every request");
}

#[test]
fn a_principal_prints_no_token() {
    let p = Principal { subject: "alice".into(), scopes: BTreeSet::new(), regions: None };
    assert_eq!(format!("{p:?}"), r#"Principal { subject: "alice", scopes: {}, regions: None }"#);
}

#[test]
fn named_credentials_parse_and_match_by_digest_only() {
    use sha2::Digest as _;
    let hex_of = |s: &str| hex::encode(sha2::Sha256::digest(s.as_bytes()));
    let bot = OpsCredential::parse(&format!("deploy-bot:act:{}", hex_of("bot-secret"))).unwrap();
    let viewer = OpsCredential::parse(&format!("viewer:read:{}", hex_of("viewer-secret"))).unwrap();
    assert_eq!((bot.name.as_str(), bot.role), ("deploy-bot", OpsRole::Act));
    let all = [bot, viewer];
    assert_eq!(OpsCredential::find(&all, "viewer-secret").map(|c| c.name.as_str()), Some("viewer"));
    assert!(OpsCredential::find(&all, "bot-secret ").is_none());
    assert!(!format!("{all:?}").contains(&hex_of("bot-secret")), "Debug shows no digest");
    for bad in ["bot:act", "bot:root:00", &format!("bad name:act:{}", hex_of("x")), "bot:act:abcd"] {
        assert!(OpsCredential::parse(bad).is_err(), "{bad}");
    }
}
