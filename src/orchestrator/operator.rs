//! What an operator action writes to a saga besides events. Events an action
//! originates (a manual event, a timer fired now, replayed parked events)
//! go through `SagaStore::apply_in_tx` like any other; what is left
//! is written here: a command re-sent as it was (same command id), a timer
//! moved or disarmed, parked events resolved, the quarantine lifted, inbox
//! rows forgotten so that replayed events apply again.
//!
//! None of these is a transition: the saga's state, data and version stay
//! as they are (the action's audit row records who did it and why, and the
//! console shows it on the saga's timeline). The caller holds the saga's row
//! lock (`lock_one`) and owns the transaction. With `write_migration`, these
//! are the only writes to a saga's rows outside a batch, and this module is
//! the only place outside `store/` that makes them (checked by
//! `tests/it/docs.rs::saga_rows_are_written_only_by_the_orchestrator`).

use chrono::{DateTime, Utc};

use super::SagaStore;
use crate::contracts::Message;
use crate::domain::OrderId;
use crate::store::script::Script;
use crate::store::{StoreError, Tx, inbox, outbox, parked, timers};

impl SagaStore {
    /// Publishes `msg` again through the outbox, as it was built (the
    /// participant's idempotency on the command id makes it harmless).
    pub async fn resend(&self, tx: &mut Tx, msg: &Message, now: DateTime<Utc>) -> Result<(), StoreError> {
        let row = self.outbox.row(msg, None)?;
        let mut script = Script::new();
        outbox::insert(&mut script, &[row], now);
        script.run(tx).await
    }
}

/// Moves an armed timer's due time; it keeps the version that armed it (its
/// firing's id).
pub async fn move_timer(tx: &mut Tx, order_id: OrderId, name: &str, due: DateTime<Utc>) -> Result<(), StoreError> {
    timers::set_timer_due(tx, order_id, name, due).await
}

/// Disarms a timer.
pub async fn disarm_timer(tx: &mut Tx, order_id: OrderId, name: &str) -> Result<(), StoreError> {
    timers::delete_timer(tx, order_id, name).await
}

/// Marks parked events resolved (`replayed` or `skipped`).
pub async fn resolve_parked(tx: &mut Tx, ids: &[u64], resolution: &str) -> Result<(), StoreError> {
    parked::resolve_parked(tx, ids, resolution).await
}

/// Forgets inbox rows, so that their events can be applied again (a replay).
pub async fn forget_inbox(tx: &mut Tx, event_ids: &[String]) -> Result<(), StoreError> {
    inbox::forget_inbox(tx, event_ids).await
}
