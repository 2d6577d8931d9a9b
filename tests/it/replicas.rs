//! Several daemon processes against one database and broker: partitions
//! spread by the consumer group, one outbox publisher per shard, timer sweeps
//! that never double-fire — and one replica stopped in the middle of the run.

use std::collections::HashSet;
use std::time::Duration;

use order_saga::contracts::{Message, MessageKind};

use crate::daemon::*;
use crate::helpers::*;

const T: Duration = Duration::from_secs(90);

async fn assigned(d: &Daemon) -> u64 {
    crate::saga_flow::metric(&d.metrics().await, "saga_consumer_partitions_assigned")
}

async fn shards(d: &Daemon) -> u64 {
    crate::saga_flow::metric(&d.metrics().await, "outbox_shards_owned")
}

#[tokio::test]
async fn three_replicas_complete_every_saga_exactly_once_while_one_stops() {
    let env = SagaEnv::new().await;
    let replicas = [
        env.start_daemon(&[("ORDER_SAGA_TIMERS", "payment_timeout=5s")]).await,
        env.start_daemon(&[("ORDER_SAGA_TIMERS", "payment_timeout=5s")]).await,
        env.start_daemon(&[("ORDER_SAGA_TIMERS", "payment_timeout=5s")]).await,
    ];
    let [a, b, mut c] = replicas;
    eventually(T, "all three replicas consume and publish", || async {
        let p = [assigned(&a).await, assigned(&b).await, assigned(&c).await];
        let s = [shards(&a).await, shards(&b).await, shards(&c).await];
        p.iter().all(|n| *n > 0)
            && p.iter().sum::<u64>() == 4 * PARTITIONS as u64
            && s.iter().all(|n| *n > 0)
            && s.iter().sum::<u64>() == 8
    })
    .await;
    let _sim = env.simulator(sim_args()).await;

    // Half the orders confirm; every fifth never gets a payment answer, so
    // its timer fires (exactly once, whichever replica sweeps).
    let mut ids = Vec::new();
    let mut silent = HashSet::new();
    for i in 0..45 {
        let d = [&a, &b, &c][i % 3];
        let customer = if i % 5 == 0 { format!("silent-{i}") } else { format!("c-{i}") };
        let id = d.create_order(&order_body(&customer, "eu", &[("A", 1, "1.00")])).await;
        if i % 5 == 0 {
            silent.insert(id);
        }
        ids.push(id);
    }
    // Stop one replica mid-run, gracefully: it finishes its batch, commits and hands its shards back.
    let status = c.terminate().await;
    assert!(status.success(), "graceful shutdown exits 0: {status:?}\n{}", c.logs());
    assert!(c.logs().contains("shutdown complete"));
    for i in 45..60 {
        let d = if i % 2 == 0 { &a } else { &b };
        let customer = if i % 5 == 0 { format!("silent-{i}") } else { format!("c-{i}") };
        let id = d.create_order(&order_body(&customer, "eu", &[("A", 1, "1.00")])).await;
        if i % 5 == 0 {
            silent.insert(id);
        }
        ids.push(id);
    }
    for id in &ids {
        if silent.contains(id) {
            env.wait_state(*id, "CANCELLED", T).await;
        } else {
            // Normally COMPLETED; a payment held up by the rebalance for longer
            // than the timeout is cancelled, and its late authorization voided.
            eventually(T, &format!("saga {id} finished"), || async {
                matches!(env.saga_state(*id).await.as_deref(), Some("COMPLETED" | "CANCELLED"))
            })
            .await;
        }
    }
    env.wait_outbox_drained(T).await;

    // Exactly once: no event applied twice, one final status per order, each
    // timer fired at most once, nothing left armed.
    let n = ids.len() as i64;
    assert_eq!(
        env.count("SELECT COUNT(*) FROM saga_transitions").await,
        env.count("SELECT COUNT(DISTINCT order_id, event_id) FROM saga_transitions").await,
        "an event was applied twice"
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM order_status_history").await,
        2 * n,
        "PENDING and one final status per order"
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM saga_inbox WHERE source = 'timer'").await,
        env.count("SELECT COUNT(DISTINCT order_id) FROM saga_inbox WHERE source = 'timer'").await,
        "a timer fired twice"
    );
    assert!(env.count("SELECT COUNT(*) FROM saga_inbox WHERE source = 'timer'").await >= silent.len() as i64);
    assert_eq!(env.count("SELECT COUNT(*) FROM saga_timers").await, 0);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM saga_instances s JOIN orders o ON o.order_id = s.order_id WHERE (s.state = 'COMPLETED') <> (o.status = 'CONFIRMED')").await,
        0,
        "saga and order agree"
    );
    // No command published twice by id.
    for kind in [
        MessageKind::InventoryReserve,
        MessageKind::PaymentAuthorize,
        MessageKind::PaymentVoid,
        MessageKind::InventoryRelease,
    ] {
        let recs = env.read_topic(Some(kind)).await;
        let ids: Vec<String> = recs
            .iter()
            .filter_map(|r| match r.msg.as_ref()? {
                Message::InventoryReserve(m) => Some(m.command_id.clone()),
                Message::PaymentAuthorize(m) => Some(m.command_id.clone()),
                Message::PaymentVoid(m) => Some(m.command_id.clone()),
                Message::InventoryRelease(m) => Some(m.command_id.clone()),
                _ => None,
            })
            .collect();
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), unique.len(), "{kind}: a command published twice");
    }
    // The survivors took over the stopped replica's partitions and shards.
    eventually(T, "survivors own everything", || async {
        assigned(&a).await + assigned(&b).await == 4 * PARTITIONS as u64 && shards(&a).await + shards(&b).await == 8
    })
    .await;
    // Dropping SIGKILLs the last two members (tansu 0.6.0 mishandles a group all of whose members left gracefully).
}
