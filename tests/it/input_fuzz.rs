//! Property: no query parameter, cursor, path segment or action body of any
//! endpoint (orders, and /ops with a token) reaches a panic or a 5xx. Bad
//! input is a 4xx with the usual error shape. Seeded, so a failure replays.

use axum::http::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::helpers::*;

/// Values that broke parsers before, and random ones around them.
fn value(rng: &mut StdRng) -> String {
    const SEEDS: &[&str] = &[
        "",
        "0",
        "-1",
        "1",
        "9223372036854775807",
        "18446744073709551616",
        "-9223372036854775808",
        "99999999999999999999",
        "1.5",
        "NaN",
        "true",
        "yes",
        "300000y",
        "10000y",
        "1ns",
        "15m",
        "abc",
        "2024-01-01T00:00:00Z",
        "+275760-09-13T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1000-01-01T00:00:00Z",
        "%00",
        "%FF%FE",
        "é",
        "PENDING",
        "CONFIRMED",
        "nope",
        "eu-west",
        "eyJ0Ijo5MjIzMzcyMDM2ODU0Nzc1ODA3LCJpZCI6MSwiZiI6IngifQ",
        "9223372036854775807.1",
        "-1.-1",
        "1.18446744073709551615",
        "253402300800000000.1",
        "-62135596800000001.1",
    ];
    match rng.random_range(0..4) {
        0 | 1 => SEEDS[rng.random_range(0..SEEDS.len())].to_owned(),
        2 => {
            let n: i128 = rng.random::<i64>() as i128 * rng.random_range(1..4);
            let sep = [".", "", "e", ":"][rng.random_range(0..4)];
            format!("{n}{sep}{}", rng.random::<u32>())
        }
        _ => {
            use base64::Engine as _;
            let t: i64 = rng.random();
            let id: i64 = rng.random();
            let raw = json!({"t": t, "id": id, "f": format!("{:x}", rng.random::<u64>())}).to_string();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        }
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn query(rng: &mut StdRng, params: &[&str]) -> String {
    let n = rng.random_range(1..=3);
    (0..n)
        .map(|_| format!("{}={}", params[rng.random_range(0..params.len())], enc(&value(rng))))
        .collect::<Vec<_>>()
        .join("&")
}

fn assert_4xx_or_ok(path: &str, r: &Resp) {
    assert!(r.status.as_u16() < 500, "{path} -> {} {}", r.status, String::from_utf8_lossy(&r.raw));
    if r.status.is_client_error() && r.status.as_u16() != 404 && r.status.as_u16() != 405 {
        assert!(r.json["error"]["code"].is_string(), "{path}: error shape: {}", String::from_utf8_lossy(&r.raw));
    }
}

#[tokio::test]
async fn no_parameter_of_any_endpoint_reaches_a_5xx() {
    let app = TestApp::new().await;
    let created = app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await;
    created.expect(201);
    let id = created.json["order_id"].as_u64().unwrap();
    // Awaiting payment: the payment timer is armed, so reschedules are evaluated.
    app.deliver(&[order_saga::contracts::Message::from(order_saga::contracts::InventoryReserved {
        event_id: "fuzz-res".into(),
        order_id: id as i64,
        occurred_at: order_saga::contracts::TimestampMicros::from_datetime(chrono::Utc::now()),
        tenant_region: "eu".into(),
        command_id: None,
    })])
    .await;
    app.create_order(&key(), &order_body("c", "eu", &[("A", 1, "1.00")])).await.expect(201);
    // A real cursor's filter tag: forged cursors that pass the tag check reach the keyset.
    let page = app.get("/orders/search?limit=1").await;
    let real = page.json["next_cursor"].as_str().expect("a next page").to_owned();
    let tag = {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&real).unwrap();
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["f"].as_str().unwrap().to_owned()
    };
    let forged = |rng: &mut StdRng| {
        use base64::Engine as _;
        let t: i64 = match rng.random_range(0..4) {
            0 => rng.random(),
            1 => i64::MAX,
            2 => i64::MIN,
            _ => 253_402_300_800_000_000 + rng.random_range(0..1_000_000_000_000i64),
        };
        let raw = json!({"t": t, "id": rng.random::<u64>(), "f": tag}).to_string();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    };
    let auth = format!("Bearer {OPS_TOKEN}");
    let shown = app.call(Method::GET, &format!("/ops/sagas/{id}"), &[("authorization", &auth)], None).await;
    let current = shown.raw.clone();
    let version = serde_json::from_slice::<serde_json::Value>(&current).unwrap().pointer("/saga/version").cloned();
    assert!(version.is_some(), "{}", String::from_utf8_lossy(&current));
    let mut rng = StdRng::seed_from_u64(0x5a6a);
    let search = ["status", "tenant_region", "customer_id", "created_from", "created_to", "limit", "cursor", "x"];
    // Every filter the list takes (the bulk body takes the same), plus paging.
    let ops_list: Vec<&str> = order_saga::http::ops::FILTER_KEYS.iter().copied().chain(["limit", "cursor"]).collect();
    let audit = ["order_id", "limit", "cursor", "actor"];
    for _ in 0..1500 {
        let p = format!("/orders/search?{}", query(&mut rng, &search));
        assert_4xx_or_ok(&p, &app.get(&p).await);
        let p = format!("/orders/search?limit=1&cursor={}", forged(&mut rng));
        assert_4xx_or_ok(&p, &app.get(&p).await);
        let p = format!("/ops/sagas?cursor={}.{}", rng.random::<i64>(), rng.random::<u64>());
        let r = app.call(Method::GET, &p, &[("authorization", &auth)], None).await;
        assert_4xx_or_ok(&p, &r);
        let p = format!("/orders/{}", enc(&value(&mut rng)));
        assert_4xx_or_ok(&p, &app.get(&p).await);
        for p in
            [format!("/ops/sagas?{}", query(&mut rng, &ops_list)), format!("/ops/audit?{}", query(&mut rng, &audit))]
        {
            let r = app.call(Method::GET, &p, &[("authorization", &auth)], None).await;
            assert_4xx_or_ok(&p, &r);
        }
        let p = format!("/ops/sagas/{}", enc(&value(&mut rng)));
        assert_4xx_or_ok(&p, &app.call(Method::GET, &p, &[("authorization", &auth)], None).await);
        // Actions with hostile durations, times and versions: dry runs, so the saga stays put.
        let v = value(&mut rng);
        let mut body = match rng.random_range(0..4) {
            0 => json!({"action": "reschedule_timer", "timer": "payment_timeout", "after": v}),
            1 => json!({"action": "reschedule_timer", "timer": "payment_timeout", "at": v}),
            2 => json!({"action": "force", "event": v}),
            _ => json!({"action": v}),
        };
        let expected = match rng.random_range(0..3) {
            0 => json!(value(&mut rng)),
            1 => json!(rng.random::<i64>()),
            _ => version.clone().unwrap(),
        };
        for (k, x) in [
            ("actor", json!("fuzz")),
            ("reason", json!("fuzz")),
            ("dry_run", json!(true)),
            ("expected_version", expected.clone()),
        ] {
            body[k] = x;
        }
        let p = format!("/ops/sagas/{id}/actions");
        let r = app
            .call(
                Method::POST,
                &p,
                &[("authorization", &auth), ("content-type", "application/json")],
                Some(body.to_string().into_bytes()),
            )
            .await;
        assert_4xx_or_ok(&format!("{p} {body}"), &r);
        let change = json!({"status": value(&mut rng), "expected_version": expected, "actor": value(&mut rng)});
        let p = format!("/orders/{id}/status");
        let r = app.post_json(&p, &[], &change).await;
        assert_4xx_or_ok(&format!("{p} {change}"), &r);
    }
}

#[tokio::test]
async fn a_client_chosen_region_is_never_a_new_metric_series() {
    let app = TestApp::new().await;
    for region in ["eu-west", "mars-1", "x-0123456789", "eu-west"] {
        app.create_order(&key(), &order_body("c", region, &[("A", 1, "1.00")])).await.expect(201);
    }
    let text = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&text.raw);
    assert!(text.contains("order_created_total{tenant_region=\"eu-west\"} 2"), "{text}");
    assert!(text.contains("order_created_total{tenant_region=\"other\"} 2"), "{text}");
    assert!(!text.contains("mars-1"), "{text}");
}

#[tokio::test]
async fn a_dry_run_records_no_metric() {
    let app = TestApp::new().await;
    let created = app.create_order(&key(), &order_body("c", "eu-west", &[("A", 1, "1.00")])).await;
    let id = created.json["order_id"].as_u64().unwrap();
    app.deliver(&[order_saga::contracts::Message::from(order_saga::contracts::InventoryReserved {
        event_id: "dry-res".into(),
        order_id: id as i64,
        occurred_at: order_saga::contracts::TimestampMicros::from_datetime(chrono::Utc::now()),
        tenant_region: "eu-west".into(),
        command_id: None,
    })])
    .await;
    let auth = format!("Bearer {OPS_TOKEN}");
    let shown = app.call(Method::GET, &format!("/ops/sagas/{id}"), &[("authorization", &auth)], None).await;
    let version = shown.json.pointer("/saga/version").cloned().unwrap();
    let body = json!({"action": "fire_timer", "timer": "payment_timeout", "expected_version": version,
        "actor": "ops:a", "reason": "what if", "dry_run": true});
    let r = app
        .call(
            Method::POST,
            &format!("/ops/sagas/{id}/actions"),
            &[("authorization", &auth), ("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await;
    r.expect(200);
    assert_eq!(r.json["state_after"], "CANCELLED", "{}", r.json);
    let text = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&text.raw);
    assert!(!text.contains("saga_events_total{"), "a dry run counted an event:\n{text}");
    assert!(!text.contains("saga_state_dwell_seconds_count{"), "{text}");
}
