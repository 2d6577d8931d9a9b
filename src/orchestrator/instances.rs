//! Saga rows (`saga_instances`) and their transition log (`saga_transitions`):
//! loading and locking instances for a batch, writing them back, and the reads
//! and quarantine updates of operator actions.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::LockMode;
use crate::domain::{OrderId, SagaVersion};
use crate::saga::model::InstanceData;
use crate::saga::{Catalog, Instance};
use crate::store::orders::{self, HeadColumns, JOINED_HEAD_COLUMNS, OrderHead};
use crate::store::script::Script;
use crate::store::{Ctx, Db, StoreError, Tx, truncate};

/// A saga row as loaded.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) inst: Instance,
    pub(crate) quarantined: Option<String>,
    pub(crate) quarantined_at: Option<DateTime<Utc>>,
    pub(crate) dirty: bool,
    pub(crate) quarantine_changed: bool,
}

pub(crate) struct TransitionRow {
    pub(crate) order_id: OrderId,
    pub(crate) saga_version: SagaVersion,
    pub(crate) event_id: String,
    pub(crate) event_name: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) actor: String,
    pub(crate) reason: Option<String>,
}

pub(crate) const INSTANCE_COLUMNS: &str = "order_id, saga_name, definition_version, state, version, data, state_entered_at, quarantined_at, quarantine_reason";

/// When and why a saga was quarantined.
pub(crate) type Quarantine = (DateTime<Utc>, String);

pub(crate) fn instance_from_row(r: &sqlx::mysql::MySqlRow) -> Result<(Instance, Option<Quarantine>), StoreError> {
    let data: String = r.try_get("data").ctx("decoding saga data")?;
    let data: InstanceData =
        serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("saga_instances.data: {e}")))?;
    let order_id: OrderId = r.try_get("order_id").ctx("decoding saga order_id")?;
    let quarantined_at: Option<DateTime<Utc>> = r.try_get("quarantined_at").ctx("decoding quarantined_at")?;
    let reason: Option<String> = r.try_get("quarantine_reason").ctx("decoding quarantine_reason")?;
    Ok((
        Instance {
            order_id,
            saga_name: r.try_get("saga_name").ctx("decoding saga_name")?,
            definition_version: r.try_get("definition_version").ctx("decoding definition_version")?,
            state: r.try_get("state").ctx("decoding state")?,
            version: r.try_get("version").ctx("decoding version")?,
            state_entered_at: r.try_get("state_entered_at").ctx("decoding state_entered_at")?,
            data,
        },
        quarantined_at.map(|t| (t, reason.unwrap_or_default())),
    ))
}

/// [`INSTANCE_COLUMNS`] of `saga_instances s`, for a read that joins other tables.
const JOINED_INSTANCE_COLUMNS: &str = "s.order_id, s.saga_name, s.definition_version, s.state, s.version, s.data, \
     s.state_entered_at, s.quarantined_at, s.quarantine_reason";

fn slot_from_row(r: &sqlx::mysql::MySqlRow) -> Result<Slot, StoreError> {
    let (inst, quarantined) = instance_from_row(r)?;
    Ok(Slot {
        inst,
        quarantined_at: quarantined.as_ref().map(|q| q.0),
        quarantined: quarantined.map(|q| q.1),
        dirty: false,
        quarantine_changed: false,
    })
}

pub(crate) async fn load_sagas(
    tx: &mut Tx,
    ids: &BTreeSet<OrderId>,
    lock: LockMode,
) -> Result<HashMap<OrderId, Slot>, StoreError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    // One primary-key lookup per id, locked in the ids' (ascending) order;
    // one text for any number of ids (`store::rowset`).
    const WAIT: &str = "FOR UPDATE";
    const SKIP: &str = "FOR UPDATE SKIP LOCKED";
    let sql = format!(
        "SELECT {INSTANCE_COLUMNS} FROM JSON_TABLE(?, '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$')) AS j \
         STRAIGHT_JOIN saga_instances s FORCE INDEX (PRIMARY) ON s.order_id = j.k {}",
        if lock == LockMode::SkipLocked { SKIP } else { WAIT }
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(crate::store::rowset::encode(ids)?)
        .fetch_all(&mut **tx)
        .await
        .ctx("locking saga rows")?;
    for r in &rows {
        let slot = slot_from_row(r)?;
        out.insert(slot.inst.order_id, slot);
    }
    Ok(out)
}

/// The saga rows of `ids` and the heads of their orders, locked.
///
/// [`LockMode::Wait`] reads both in one statement: each saga, then its order,
/// in ascending id (the saga's foreign key guarantees the order). That is the
/// order every locking path takes, one saga and its order at a time
/// (`request_status` locks one saga, then its order), so two batches that
/// share sagas wait for each other rather than deadlock.
/// [`LockMode::SkipLocked`] (the sweeper) keeps two statements: a saga skipped
/// because it is locked must not have its order locked either, and an order
/// row locked by someone else must not hide its saga from the batch.
pub(crate) async fn lock_sagas_and_orders(
    tx: &mut Tx,
    ids: &BTreeSet<OrderId>,
    lock: LockMode,
) -> Result<(HashMap<OrderId, Slot>, HashMap<OrderId, OrderHead>), StoreError> {
    if lock == LockMode::SkipLocked || ids.is_empty() {
        let slots = load_sagas(tx, ids, lock).await?;
        let owned: Vec<OrderId> = slots.keys().copied().collect();
        let heads = orders::lock_heads(tx, &owned).await?;
        return Ok((slots, heads));
    }
    let sql = format!(
        "SELECT {JOINED_INSTANCE_COLUMNS}, {JOINED_HEAD_COLUMNS} \
         FROM JSON_TABLE(?, '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$')) AS j \
         STRAIGHT_JOIN saga_instances s FORCE INDEX (PRIMARY) ON s.order_id = j.k \
         STRAIGHT_JOIN orders o FORCE INDEX (PRIMARY) ON o.order_id = s.order_id FOR UPDATE"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(crate::store::rowset::encode(ids)?)
        .fetch_all(&mut **tx)
        .await
        .ctx("locking saga and order rows")?;
    let mut slots = HashMap::with_capacity(rows.len());
    let mut heads = HashMap::with_capacity(rows.len());
    for r in &rows {
        let slot = slot_from_row(r)?;
        let head = orders::head_from_row(r, &HeadColumns::JOINED)?;
        heads.insert(head.order_id, head);
        slots.insert(slot.inst.order_id, slot);
    }
    Ok((slots, heads))
}

pub(crate) fn insert_instances(
    s: &mut Script,
    rows: &[(Instance, bool)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(crate::store::limits::ROWS_PER_STATEMENT) {
        let data: Vec<String> = chunk
            .iter()
            .map(|(inst, _)| serde_json::to_string(&inst.data).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<Result<_, _>>()?;
        s.statement("inserting sagas")
            .sql(
                "INSERT INTO saga_instances (order_id, saga_name, definition_version, state, version, terminal, tenant_region, data, \
                 state_entered_at, created_at, updated_at) ",
            )
            .values(chunk.iter().zip(&data), |b, ((inst, terminal), data)| {
                b.lit(inst.order_id)
                    .lit(&inst.saga_name)
                    .lit(inst.definition_version)
                    .lit(&inst.state)
                    .lit(inst.version)
                    .lit(*terminal)
                    .lit(&inst.data.order.tenant_region)
                    .lit(data)
                    .lit(inst.state_entered_at)
                    .lit(now)
                    .lit(now);
            });
    }
    Ok(())
}

/// Writes the changed saga rows in one statement. The rows are locked by this
/// transaction (`load_sagas`), so `ON DUPLICATE KEY UPDATE` is a batched UPDATE.
pub(crate) fn upsert_instances(
    script: &mut Script,
    slots: &[&Slot],
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if slots.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(slots.len());
    for s in slots {
        let data = serde_json::to_string(&s.inst.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let terminal =
            catalog.get(s.inst.definition_version).and_then(|d| d.state(&s.inst.state)).is_some_and(|st| st.terminal);
        let quarantined_at = match (&s.quarantined, s.quarantine_changed) {
            (None, _) => None,
            (Some(_), true) => Some(now),
            (Some(_), false) => s.quarantined_at.or(Some(now)),
        };
        rows.push((s, data, terminal, quarantined_at));
    }
    script
        .statement("updating sagas")
        .sql(
            "INSERT INTO saga_instances (order_id, saga_name, definition_version, state, version, terminal, tenant_region, data, \
             state_entered_at, created_at, updated_at, quarantined_at, quarantine_reason) ",
        )
        .values(&rows, |b, (s, data, terminal, quarantined_at)| {
            b.lit(s.inst.order_id)
                .lit(&s.inst.saga_name)
                .lit(s.inst.definition_version)
                .lit(&s.inst.state)
                .lit(s.inst.version)
                .lit(*terminal)
                .lit(&s.inst.data.order.tenant_region)
                .lit(data)
                .lit(s.inst.state_entered_at)
                .lit(now)
                .lit(now)
                .lit(*quarantined_at)
                .lit(&s.quarantined);
        })
        .sql(
            " ON DUPLICATE KEY UPDATE state = VALUES(state), version = VALUES(version), terminal = VALUES(terminal), \
             data = VALUES(data), state_entered_at = VALUES(state_entered_at), updated_at = VALUES(updated_at), \
             quarantined_at = VALUES(quarantined_at), quarantine_reason = VALUES(quarantine_reason)",
        );
    Ok(())
}

pub(crate) fn insert_transitions(s: &mut Script, rows: &[TransitionRow], now: DateTime<Utc>) {
    // Chunked: bounds one statement's size.
    for rows in rows.chunks(crate::store::limits::ROWS_PER_STATEMENT) {
        s.statement("inserting saga transitions")
            .sql(
                "INSERT INTO saga_transitions (order_id, saga_version, event_id, event_name, from_state, to_state, actor, reason, occurred_at) ",
            )
            .values(rows, |b, r| {
                b.lit(r.order_id)
                    .lit(r.saga_version)
                    .lit(truncate(&r.event_id, 191))
                    .lit(truncate(&r.event_name, 128))
                    .lit(&r.from)
                    .lit(&r.to)
                    .lit(truncate(&r.actor, 128))
                    .lit(r.reason.as_deref().map(|s| truncate(s, 255)))
                    .lit(now);
            });
    }
}

/// A saga as the ops surfaces show it.
#[derive(Debug, Clone, Serialize)]
pub struct SagaView {
    pub order_id: OrderId,
    pub saga_name: String,
    pub definition_version: u32,
    pub state: String,
    pub version: SagaVersion,
    pub state_entered_at: DateTime<Utc>,
    pub quarantined: Option<String>,
    #[serde(skip)]
    pub instance: Instance,
}

/// Reads one saga (no lock).
pub async fn get(db: &Db, order_id: OrderId) -> Result<Option<SagaView>, StoreError> {
    let sql = format!("SELECT {INSTANCE_COLUMNS} FROM saga_instances WHERE order_id = ?");
    let row =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_optional(&db.pool).await.ctx("reading the saga")?;
    row.map(|r| {
        let (inst, quarantined) = instance_from_row(&r)?;
        Ok(SagaView {
            order_id: inst.order_id,
            saga_name: inst.saga_name.clone(),
            definition_version: inst.definition_version,
            state: inst.state.clone(),
            version: inst.version,
            state_entered_at: inst.state_entered_at,
            quarantined: quarantined.map(|q| q.1),
            instance: inst,
        })
    })
    .transpose()
}

// ------------------------------------------------------------ operator support

/// Locks one saga row; `None` when the order has no saga.
pub async fn lock_one(tx: &mut Tx, order_id: OrderId) -> Result<Option<(Instance, Option<String>)>, StoreError> {
    let slots = load_sagas(tx, &BTreeSet::from([order_id]), LockMode::Wait).await?;
    Ok(slots.into_values().next().map(|s| (s.inst, s.quarantined)))
}

/// Reads one saga row without locking it (the console); `None` when the order has no saga.
pub async fn read_one(tx: &mut Tx, order_id: OrderId) -> Result<Option<(Instance, Option<String>)>, StoreError> {
    // Constant text: the column list is a constant.
    let sql = format!("SELECT {INSTANCE_COLUMNS} FROM saga_instances WHERE order_id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await
        .ctx("reading a saga row")?;
    row.map(|r| instance_from_row(&r).map(|(inst, q)| (inst, q.map(|q| q.1)))).transpose()
}

/// Clears a saga's quarantine (the caller replays or skips its parked events).
pub async fn clear_quarantine(tx: &mut Tx, order_id: OrderId, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE saga_instances SET quarantined_at = NULL, quarantine_reason = NULL, updated_at = ? WHERE order_id = ?",
    )
    .bind(now)
    .bind(order_id)
    .execute(&mut **tx)
    .await
    .ctx("clearing the quarantine")?;
    Ok(())
}

/// Writes a migration the pure `saga::migrate` decided: the saga row on its
/// new definition version and state (its data, and so its outstanding
/// commands' ids, unchanged), a transition-log row, its timers re-armed. The
/// caller holds the row's lock and owns the transaction.
pub async fn write_migration(
    tx: &mut Tx,
    m: &crate::saga::migrate::Migrated,
    event_id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    use crate::saga::migrate::TimerChange;
    use crate::store::timers::{Clock, TimerOp, flush_timers};
    let inst = &m.instance;
    sqlx::query(
        "UPDATE saga_instances SET definition_version = ?, state = ?, version = ?, terminal = 0, updated_at = ? \
         WHERE order_id = ?",
    )
    .bind(inst.definition_version)
    .bind(&inst.state)
    .bind(inst.version)
    .bind(now)
    .bind(inst.order_id)
    .execute(&mut **tx)
    .await
    .ctx("moving a saga to another definition version")?;
    let row = TransitionRow {
        order_id: inst.order_id,
        saga_version: inst.version,
        event_id: event_id.to_owned(),
        event_name: crate::saga::migrate::MIGRATE_EVENT.to_owned(),
        from: m.from_state.clone(),
        to: inst.state.clone(),
        actor: actor.to_owned(),
        reason: Some(m.reason()),
    };
    let mut script = Script::new();
    insert_transitions(&mut script, &[row], now);
    script.run(tx).await?;
    // A moved timer keeps when and by which version it was armed (its firing's id).
    for c in &m.timers {
        if let TimerChange::Moved { name, to, .. } = c {
            crate::store::timers::set_timer_due(tx, inst.order_id, name, *to).await?;
        }
    }
    let ops: std::collections::BTreeMap<(OrderId, String), TimerOp> = m
        .timers
        .iter()
        .filter_map(|c| match c {
            TimerChange::Kept { .. } | TimerChange::Moved { .. } => None,
            TimerChange::Armed { name, due } => {
                Some(((inst.order_id, name.clone()), TimerOp::Arm { due_at: *due, armed_version: inst.version }))
            }
            TimerChange::Disarmed { name, .. } => Some(((inst.order_id, name.clone()), TimerOp::Cancel)),
        })
        .collect();
    let mut script = Script::new();
    flush_timers(&mut script, &ops, now, Clock::Database)?;
    script.run(tx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_joined_read_selects_the_same_saga_columns_as_the_plain_one() {
        let plain: Vec<&str> = INSTANCE_COLUMNS.split(',').map(str::trim).collect();
        let joined: Vec<&str> =
            JOINED_INSTANCE_COLUMNS.split(',').map(|c| c.trim().strip_prefix("s.").unwrap_or("<unprefixed>")).collect();
        assert_eq!(joined, plain);
    }
}
