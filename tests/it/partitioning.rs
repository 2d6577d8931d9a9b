//! Regional partitioning of published events, against the real broker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use order_saga::contracts::*;
use order_saga::kafka::ClientSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::daemon::*;
use crate::helpers::*;

const T: Duration = Duration::from_secs(90);
/// eu-west owns 0-1, us-east 2-3; partitions 4 and 5 are the pool of unmapped regions.
const MAP: &str = "eu-west=0-1,us-east=2-3";

/// (partition, decoded message) of every record of `kind`'s topic.
async fn wire(env: &SagaEnv, kind: MessageKind) -> Vec<(i32, Message)> {
    let mut out = Vec::new();
    for r in env.read_topic(Some(kind)).await {
        out.push((r.partition, env.codec.decode(kind, r.payload.as_deref()).await.unwrap()));
    }
    out
}

/// What a regional consumer does: assign itself its region's partitions of a
/// topic (no consumer group), read from the beginning until quiet.
fn regional_consumer(client: &ClientSettings, topic: &str, partitions: &[i32]) -> Vec<(i32, Vec<u8>)> {
    let mut c = client.client_config();
    c.set("group.id", format!("regional-{}", uuid::Uuid::new_v4().simple()));
    c.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut quiet = std::time::Instant::now();
    while quiet.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            quiet = std::time::Instant::now();
            out.push((m.partition(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

#[tokio::test]
async fn domain_events_land_on_their_regions_partitions_and_a_regional_consumer_gets_exactly_its_region() {
    let env = SagaEnv::with_partitions(6).await;
    let d = env.start_daemon(&[("ORDER_SAGA_REGION_PARTITIONS", MAP)]).await;
    let _sim = env.simulator(sim_args()).await;
    let mut orders: BTreeMap<u64, &str> = BTreeMap::new();
    for region in ["eu-west", "us-east", "mars", "venus"] {
        for _ in 0..4 {
            orders.insert(d.create_order(&order_body("c", region, &[("A", 1, "1.00")])).await, region);
        }
    }
    for id in orders.keys() {
        env.wait_state(*id, "COMPLETED", T).await;
    }
    env.wait_outbox_drained(T).await;

    let mut unmapped: HashMap<&str, BTreeSet<i32>> = HashMap::new();
    for kind in [MessageKind::OrderCreated, MessageKind::OrderStatusChanged] {
        let records = wire(&env, kind).await;
        assert_eq!(records.len(), orders.len(), "{kind}: one per order");
        for (partition, msg) in &records {
            let region = orders[&(msg.order_id() as u64)];
            match region {
                "eu-west" => assert!((0..=1).contains(partition), "{kind} eu-west on {partition}"),
                "us-east" => assert!((2..=3).contains(partition), "{kind} us-east on {partition}"),
                other => {
                    assert!((4..=5).contains(partition), "{kind} {other} on {partition}: outside every mapped range");
                    unmapped.entry(other).or_default().insert(*partition);
                }
            }
        }
    }
    for (region, partitions) in &unmapped {
        assert_eq!(partitions.len(), 1, "{region}: one stable fallback partition on every topic: {partitions:?}");
    }
    // The fallback is the documented function, so other producers can compute it.
    let p = order_saga::partitioning::Partitioner::new(
        order_saga::partitioning::Strategy::TenantRegion,
        order_saga::partitioning::Strategy::Key,
        MAP.parse().unwrap(),
        HashMap::from([("t".to_owned(), 6)]),
    )
    .unwrap();
    for (region, partitions) in &unmapped {
        let expected = p.partition(
            order_saga::partitioning::Audience::Events,
            "t",
            Some(region),
            order_saga::domain::OrderId::new(1),
        );
        assert_eq!(Ok(partitions.iter().next().copied()), expected, "{region}");
    }

    // A regional consumer reading only eu-west's partitions gets every eu-west
    // domain event and nothing of any other region.
    for kind in [MessageKind::OrderCreated, MessageKind::OrderStatusChanged] {
        let topic = env.topics.of(kind).to_owned();
        let client = env.client.clone();
        let got = tokio::task::spawn_blocking(move || regional_consumer(&client, &topic, &[0, 1])).await.unwrap();
        let mut ids = BTreeSet::new();
        for (_, payload) in got {
            let m = env.codec.decode(kind, Some(&payload)).await.unwrap();
            assert_eq!(m.tenant_region(), "eu-west", "{kind}: only eu-west");
            ids.insert(m.order_id() as u64);
        }
        let eu: BTreeSet<u64> = orders.iter().filter(|(_, r)| **r == "eu-west").map(|(id, _)| *id).collect();
        assert_eq!(ids, eu, "{kind}: every eu-west order");
    }
    let m = d.metrics().await;
    let created = env.topics.of(MessageKind::OrderCreated);
    assert!(
        m.contains(&format!("outbox_published_messages_total{{topic=\"{created}\",tenant_region=\"eu-west\"}} 4")),
        "{m}"
    );
    assert!(
        m.contains(&format!("outbox_published_messages_total{{topic=\"{created}\",tenant_region=\"other\"}} 8")),
        "mars and venus are not configured metric regions: {m}"
    );
}

#[tokio::test]
async fn a_region_map_beyond_a_topic_stops_startup_naming_topic_and_region() {
    let env = SagaEnv::with_partitions(6).await;
    // Async: the registry stand-in runs on this test's runtime.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-saga"));
    cmd.arg("serve").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env.daemon_env() {
        cmd.env(k, v);
    }
    let out = cmd.env("ORDER_SAGA_REGION_PARTITIONS", "eu-west=0-1,us-east=2-9").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ORDER_SAGA_REGION_PARTITIONS: region us-east maps to partitions 2-9, but topic"),
        "{stderr}"
    );
    assert!(stderr.contains(env.prefix.as_str()) && stderr.contains("has 6 partitions"), "{stderr}");
    // A malformed map is refused before anything connects.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_order-saga"))
        .arg("serve")
        .env_clear()
        .env("ORDER_SAGA_DATABASE_URL", "mysql://u:p@127.0.0.1:1/x")
        .env("ORDER_SAGA_REGION_PARTITIONS", "eu-west=0-3,us-east=3-4")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("regions eu-west and us-east share partitions"), "{stderr}");
}

async fn ops_cancel(d: &Daemon, id: u64) {
    let shown: Value = d
        .http
        .get(format!("{}/ops/sagas/{id}", d.base))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = shown["saga"]["version"].clone();
    let r = d
        .http
        .post(format!("{}/ops/sagas/{id}/actions", d.base))
        .bearer_auth(OPS_TOKEN)
        .json(&json!({"action": "cancel", "expected_version": version, "actor": "ops:test", "reason": "region test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn per_order_order_holds_on_the_wire_across_a_daemon_restart() {
    let env = SagaEnv::with_partitions(6).await;
    let extra = [("ORDER_SAGA_REGION_PARTITIONS", MAP)];
    let mut d = env.start_daemon(&extra).await;
    let _sim = env.simulator(sim_args()).await;
    // Out of stock: PENDING_REVIEW now, CANCELLED after the restart.
    let mut ids = Vec::new();
    for region in ["eu-west", "us-east", "mars"] {
        ids.push(d.create_order(&order_body("c", region, &[("OOS-1", 1, "1.00")])).await);
    }
    for id in &ids {
        env.wait_state(*id, "PENDING_REVIEW", T).await;
    }
    env.wait_outbox_drained(T).await;
    d.terminate().await;
    let d = env.start_daemon(&extra).await;
    for id in &ids {
        ops_cancel(&d, *id).await;
        env.wait_state(*id, "CANCELLED", T).await;
    }
    env.wait_outbox_drained(T).await;
    let records = wire(&env, MessageKind::OrderStatusChanged).await;
    for id in &ids {
        let mine: Vec<&(i32, Message)> = records.iter().filter(|(_, m)| m.order_id() == *id as i64).collect();
        let partitions: BTreeSet<i32> = mine.iter().map(|(p, _)| *p).collect();
        assert_eq!(partitions.len(), 1, "order {id}: one partition before and after the restart: {partitions:?}");
        let statuses: Vec<String> = mine
            .iter()
            .map(|(_, m)| match m {
                Message::OrderStatusChanged(c) => c.to_status.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(statuses, ["PENDING_REVIEW", "CANCELLED"], "order {id}: in order on its partition");
    }
}
