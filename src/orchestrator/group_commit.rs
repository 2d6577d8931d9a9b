//! Group commit of `POST /orders`: concurrent creates share one transaction.
//!
//! Each create costs ~9 statements and a durable commit. Under load, requests
//! that arrive while earlier ones are committing are coalesced: one
//! transaction inserts all of them — one statement per table (the `orders`
//! rows too, where the server hands out consecutive ids; else one each, see
//! [`crate::store::OrderIds`]) — and one fsync covers them all. The `orders`
//! rows go first, for their ids; every other statement, the keys' included,
//! follows in one round trip (`store::script`). Nothing waits on a
//! timer: when the database keeps up, every request runs alone at once.
//!
//! Every request keeps its own outcome. The idempotency keys are inserted last,
//! with their stored responses, in one statement: a key that exists already (a
//! retry, a reuse, a concurrent twin) makes that statement fail, the shared
//! transaction rolls back, and every request of the group runs alone through
//! [`order_api::create`] — which replays, refuses or creates exactly as if it had
//! never been grouped. The same fallback covers any other error of the shared
//! transaction, so one bad request cannot fail its neighbours. A request alone
//! takes the same path (a group of one): a new key — the common case — costs
//! one statement less than claiming it first and storing the response after;
//! a replayed key costs a rolled-back transaction more.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::SagaStore;
use super::order_api::{self, CreateContext, CreateOutcome};
use crate::domain::NewOrder;
use crate::store::outbox::OutboxWriter;
use crate::store::script::Script;
use crate::store::{Ctx, Db, StoreError};
use crate::telemetry::trace_context::TraceContext;

/// Requests waiting for a group at most; beyond that `POST /orders` answers
/// 503 at once instead of queueing without bound (overload).
pub const QUEUE_CAPACITY: usize = 4096;

/// One `POST /orders` request.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub order: NewOrder,
    pub key: String,
    pub fingerprint: [u8; 32],
    pub trace: Option<TraceContext>,
    /// Who creates it (the verified principal); `None`: [`Shared::actor`].
    pub actor: Option<String>,
}

/// What a group transaction needs besides the requests.
#[derive(Clone)]
pub struct Shared {
    pub db: Db,
    pub outbox: OutboxWriter,
    pub sagas: Option<SagaStore>,
    /// The history's actor of orders created without a verified principal.
    pub actor: &'static str,
}

/// Creates the orders of `reqs`, one outcome per request, in order (see the
/// module documentation).
pub async fn create_many(s: &Shared, reqs: &[CreateRequest]) -> Vec<Result<CreateOutcome, StoreError>> {
    let distinct_keys = {
        let mut keys: Vec<&str> = reqs.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        keys.windows(2).all(|w| w[0] != w[1])
    };
    if distinct_keys {
        match crate::store::retry(|| create_together(s, reqs)).await {
            Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::debug!(error = %e, requests = reqs.len(), "group commit fell back to one transaction per order")
            }
        }
    }
    let mut out = Vec::with_capacity(reqs.len());
    // One after the other: two requests with one key must not race each other.
    for r in reqs {
        let actor = r.actor.as_deref().unwrap_or(s.actor);
        let ctx = CreateContext { outbox: &s.outbox, trace: r.trace.as_ref(), saga: s.sagas.as_ref(), actor };
        out.push(order_api::create(&s.db, &r.order, &r.key, r.fingerprint, &ctx).await);
    }
    out
}

async fn create_together(s: &Shared, reqs: &[CreateRequest]) -> Result<Vec<CreateOutcome>, StoreError> {
    let mut tx = s.db.begin().await?;
    let now = crate::store::now();
    let orders: Vec<(&NewOrder, Option<&TraceContext>)> = reqs.iter().map(|r| (&r.order, r.trace.as_ref())).collect();
    let actors: Vec<&str> = reqs.iter().map(|r| r.actor.as_deref().unwrap_or(s.actor)).collect();
    let mut script = Script::new();
    let views = order_api::insert_orders(
        &mut tx,
        &mut script,
        &orders,
        now,
        &s.outbox,
        s.sagas.as_ref(),
        &actors,
        s.db.order_ids,
    )
    .await?;
    let bodies: Vec<String> = views
        .iter()
        .map(|v| serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect::<Result<_, _>>()?;
    // Last: a key that exists fails this statement; dropping `tx` rolls everything back.
    script
        .statement("storing the idempotency keys of a group")
        .sql(
            "INSERT INTO idempotency_keys (idempotency_key, request_fingerprint, created_at, order_id, response_status, response_body) ",
        )
        .values(reqs.iter().zip(&views).zip(&bodies), |b, ((r, v), body)| {
            b.lit(&r.key).lit(&r.fingerprint[..]).lit(now).lit(v.order_id).lit(201u16).lit(body);
        });
    script.run(&mut tx).await?;
    tx.commit().await.ctx("committing a group of new orders")?;
    Ok(views.into_iter().zip(bodies).map(|(v, body)| CreateOutcome::Created { order_id: v.order_id, body }).collect())
}

struct Job {
    req: CreateRequest,
    reply: oneshot::Sender<Result<CreateOutcome, StoreError>>,
}

/// The front door of order creation: hands requests to the group committer.
/// Cheap to clone.
#[derive(Clone)]
pub struct CreateBatcher {
    jobs: mpsc::Sender<Job>,
}

/// Why the group committer did not take a request.
#[derive(Debug, thiserror::Error)]
pub enum NotTaken {
    /// The runtime is shutting down.
    #[error("the order group committer has stopped")]
    Stopped,
    /// [`QUEUE_CAPACITY`] requests are already waiting.
    #[error("too many orders are waiting to be committed")]
    Overloaded,
}

impl CreateBatcher {
    /// Starts the committer: up to `in_flight` groups in flight
    /// (`ORDER_SAGA_ORDER_GROUP_COMMIT_IN_FLIGHT`), each of at most
    /// `max_group` requests (1 turns grouping off). `on_group` sees each
    /// group's size (a metric).
    pub fn spawn(
        shared: Shared,
        max_group: usize,
        in_flight: usize,
        on_group: impl Fn(usize) + Send + Sync + 'static,
    ) -> CreateBatcher {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_CAPACITY);
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        let on_group = Arc::new(on_group);
        tokio::spawn(async move {
            loop {
                // A free slot first: while every slot commits, requests queue
                // here and the next group takes them all.
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let Some(first) = rx.recv().await else { return };
                let mut jobs = vec![first];
                while jobs.len() < max_group.max(1) {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                // A caller that gave up (request timeout, 503) was told nothing
                // was promised: do not create its order behind its back.
                jobs.retain(|j| !j.reply.is_closed());
                if jobs.is_empty() {
                    continue;
                }
                on_group(jobs.len());
                let (shared, _permit) = (shared.clone(), permit);
                tokio::spawn(async move {
                    let _permit = _permit;
                    let (reqs, replies): (Vec<CreateRequest>, Vec<_>) =
                        jobs.into_iter().map(|j| (j.req, j.reply)).unzip();
                    let started = Utc::now();
                    let outcomes = create_many(&shared, &reqs).await;
                    tracing::trace!(
                        group = reqs.len(),
                        elapsed_ms = (Utc::now() - started).num_milliseconds(),
                        "order group committed"
                    );
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        // A caller that gave up (timeout) still has its order: its retry replays it.
                        let _ = reply.send(outcome);
                    }
                });
            }
        });
        CreateBatcher { jobs: tx }
    }

    /// Creates one order (possibly in a group with others).
    pub async fn create(&self, req: CreateRequest) -> Result<Result<CreateOutcome, StoreError>, NotTaken> {
        let (reply, answer) = oneshot::channel();
        self.jobs.try_send(Job { req, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NotTaken::Overloaded,
            mpsc::error::TrySendError::Closed(_) => NotTaken::Stopped,
        })?;
        answer.await.map_err(|_| NotTaken::Stopped)
    }
}
