//! The transactions behind the order API: create an order (idempotently,
//! starting its saga in the same transaction) and change its status (through
//! the saga when the order has one). They compose the table functions of
//! `orders`, `idempotency`, `outbox` and the saga shell (`sagas`), so that
//! those never call each other back and forth.

use chrono::{DateTime, Utc};

use super::SagaStore;
use crate::domain::{NewOrder, OrderId, OrderStatus, StatusChange};
use crate::store::orders::{
    ChangeRefusal, OrderView, apply_status, created_message, get, head, insert_rows, new_order_view,
};
use crate::store::outbox::{self, OutboxWriter};
use crate::store::script::Script;
use crate::store::{Ctx, Db, OrderIds, StoreError, Tx, idempotency};
use crate::telemetry::trace_context::TraceContext;

/// Result of an idempotent create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// A new order was created; the body is the stored response.
    Created { order_id: OrderId, body: String },
    /// The key was used before with the same body: the original response.
    Replayed { status: u16, body: String },
    /// The key was used before with a different body.
    KeyReused,
}

/// What the order-creation transaction needs beyond the order itself.
pub struct CreateContext<'a> {
    pub outbox: &'a OutboxWriter,
    pub trace: Option<&'a TraceContext>,
    /// Starts the saga in the same transaction (`SagaStore::start_many`).
    pub saga: Option<&'a SagaStore>,
    pub actor: &'a str,
}

/// Creates an order idempotently: the key, the order, its items, its first
/// history row, the `order.created.v1` outbox row (and the saga's first
/// effects) commit together or not at all.
///
/// Concurrent requests with one key serialise on the key's primary key: the
/// first inserts it, the others wait on its row lock and, once it commits, get
/// a duplicate-key error and return the stored response.
pub async fn create(
    db: &Db,
    order: &NewOrder,
    key: &str,
    fingerprint: [u8; 32],
    ctx: &CreateContext<'_>,
) -> Result<CreateOutcome, StoreError> {
    crate::store::retry(|| async {
        let mut tx = db.begin().await?;
        let now = crate::store::now();
        if !idempotency::claim(&mut tx, key, &fingerprint, now).await? {
            tx.rollback().await.ctx("rolling back")?;
            return match idempotency::lookup(&db.pool, key).await? {
                Some(stored) if stored.fingerprint != fingerprint => Ok(CreateOutcome::KeyReused),
                Some(stored) => match (stored.status, stored.body) {
                    (Some(status), Some(body)) => Ok(CreateOutcome::Replayed { status, body }),
                    // Written in the same transaction as the response; cannot
                    // be seen half-written under READ COMMITTED.
                    _ => Err(StoreError::Corrupt(format!("idempotency key {key:?} has no stored response"))),
                },
                // The holder rolled back between our insert and our read: run again.
                None => Err(StoreError::Race("the idempotency key was released while we waited for it")),
            };
        }
        let mut script = Script::new();
        let mut views = insert_orders(
            &mut tx,
            &mut script,
            &[(order, ctx.trace)],
            now,
            ctx.outbox,
            ctx.saga,
            &[ctx.actor],
            db.order_ids,
        )
        .await?;
        script.run(&mut tx).await?;
        let view = views.pop().ok_or_else(|| StoreError::Corrupt("no order was inserted".into()))?;
        let body = serde_json::to_string(&view).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        idempotency::complete(&mut tx, key, view.order_id, 201, &body).await?;
        tx.commit().await.ctx("committing the new order")?;
        Ok(CreateOutcome::Created { order_id: view.order_id, body })
    })
    .await
}

/// Inserts new orders with everything that goes with them: their rows
/// (`orders::insert_rows`, which inserts the `orders` rows at once, for their
/// ids), their `order.created.v1` outbox rows, their sagas' first transitions
/// and effects — one statement per table for all of them, added to `script`
/// for the caller to run.
/// `orders[i].1` is the trace of the request that created order `i`, `actors[i]` who created it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_orders(
    tx: &mut Tx,
    script: &mut Script,
    orders: &[(&NewOrder, Option<&TraceContext>)],
    now: DateTime<Utc>,
    outbox_writer: &OutboxWriter,
    saga: Option<&SagaStore>,
    actors: &[&str],
    order_ids: OrderIds,
) -> Result<Vec<OrderView>, StoreError> {
    let new: Vec<&NewOrder> = orders.iter().map(|(o, _)| *o).collect();
    let ids = insert_rows(tx, script, &new, now, actors, order_ids).await?;
    let mut rows = Vec::with_capacity(orders.len() * 2);
    for ((order, trace), id) in orders.iter().zip(&ids) {
        rows.push(outbox_writer.row(&created_message(*id, order, now), *trace)?);
    }
    if let Some(saga) = saga {
        let started: Vec<(OrderId, &NewOrder, Option<&TraceContext>)> =
            orders.iter().zip(&ids).map(|((o, t), id)| (*id, *o, *t)).collect();
        rows.extend(saga.start_many(script, &started, now)?);
    }
    outbox::insert(script, &rows, now);
    Ok(orders.iter().zip(ids).map(|((o, _), id)| new_order_view(id, o, now)).collect())
}

/// `POST /orders/{id}/status`. The read is not locked: two requests that read
/// the same version race on the version-guarded UPDATE and the loser gets
/// [`ChangeRefusal::Concurrent`] — a change is only ever applied to the state
/// its requester could have seen.
pub async fn change_status(
    db: &Db,
    order_id: OrderId,
    change: &StatusChange,
    outbox_writer: &OutboxWriter,
    saga: Option<&SagaStore>,
    trace: Option<&TraceContext>,
) -> Result<Result<StatusChanged, ChangeRefusal>, StoreError> {
    let outcome = crate::store::retry(|| async {
        let mut tx = db.begin().await?;
        let Some(head) = head(&mut tx, order_id, false).await? else {
            return Ok(Err(ChangeRefusal::NotFound));
        };
        if let Some(expected) = change.expected_version
            && expected != u64::from(head.version)
        {
            return Ok(Err(ChangeRefusal::VersionMismatch { expected, actual: head.version }));
        }
        let now = crate::store::now();
        let result = match saga {
            Some(s) => s.request_status(&mut tx, &head, change, now, trace).await?,
            None => {
                apply_status(
                    &mut tx,
                    &head,
                    change.to_status,
                    change.reason_code.as_deref(),
                    change.comment.as_deref(),
                    &change.actor,
                    now,
                    outbox_writer,
                    trace,
                )
                .await?
            }
        };
        match result {
            Ok(_) => {
                tx.commit().await.ctx("committing the status change")?;
                Ok(Ok((head.status, head.updated_at)))
            }
            Err(refusal) => {
                tx.rollback().await.ctx("rolling back")?;
                Ok(Err(refusal))
            }
        }
    })
    .await?;
    match outcome {
        Ok((previous, previous_since)) => {
            let order = get(db, order_id).await?.ok_or(StoreError::Corrupt("order vanished".into()))?;
            Ok(Ok(StatusChanged { order, previous, previous_since }))
        }
        Err(r) => Ok(Err(r)),
    }
}

/// A status change that was applied.
#[derive(Debug, Clone)]
pub struct StatusChanged {
    pub order: OrderView,
    /// The status before, and since when (for the time-in-status metric).
    pub previous: OrderStatus,
    pub previous_since: DateTime<Utc>,
}
