//! Operator tooling: inspect stuck sagas and act on them safely.
//!
//! The HTTP endpoints under `/ops` and the `order-saga ops` commands are two
//! faces of this module. Every action
//!
//! * is validated against the saga's definition (an event the current state
//!   does not accept is refused, not forced);
//! * is guarded by the saga's version (`expected_version`): an operator acts
//!   on the state they looked at, or not at all;
//! * can be a dry run: the action runs in a transaction that is rolled back,
//!   and the report shows exactly what it would have written;
//! * is recorded in `ops_audit` with actor and reason;
//! * is decided by a pure plan (`plan/`) over one snapshot of the saga, and
//!   whatever moves the saga goes through the same transition function and
//!   shell as a normal event, so it emits the same domain events and commands.

mod actions;
pub mod cli;
mod gauges;
mod jobs;
pub mod plan;
pub mod preview;

pub use self::actions::Action;
pub use self::plan::allowed_actions;

pub use self::gauges::refresh_gauges;
pub use self::jobs::{BulkRequest, JobEnd, JobStatus, Jobs, supervise};
use self::plan::{Actor, ArmedTimer, Expect, Plan, Snapshot, Write};

use std::sync::Arc;

use serde::Serialize;

use serde_json::{Value, json};

use crate::store::outbox::RelayWakeup;

use crate::domain::{OrderId, OrderStatus, SagaVersion};

use crate::store::inspect;

use crate::orchestrator::{self as shell, InboundOutcome, LockMode, SagaStore, operator};

use crate::store::{Ctx, Db, StoreError, Tx, audit, orders, outbox, parked, timers};

use crate::telemetry::metrics::{ActionLabel, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("order {0} has no saga")]
    NotFound(OrderId),
    #[error("the saga is at version {actual}, not {expected}: look at it again")]
    StaleVersion {
        expected: SagaVersion,
        actual: SagaVersion,
        /// What moved it on since `expected` (newest ten), oldest first.
        changes: Vec<crate::store::inspect::TransitionView>,
    },
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    BadRequest(String),
    /// [`crate::store::jobs::MAX_RUNNING`] bulk jobs run already.
    #[error("{0} bulk jobs are running (at most {max} at once): wait for one or stop it", max = crate::store::jobs::MAX_RUNNING)]
    TooManyJobs(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<plan::Refusal> for OpsError {
    fn from(r: plan::Refusal) -> OpsError {
        match r {
            plan::Refusal::NotAllowed(m) => OpsError::NotAllowed(m),
            plan::Refusal::BadRequest(m) => OpsError::BadRequest(m),
        }
    }
}

/// How an action's transaction ended: written (commit, or roll back a dry
/// run), or refused (roll back, audit the refusal).
enum Attempt {
    Done(Report),
    Refused(OpsError),
}

/// What reading a saga's snapshot found.
/// How many selected sagas a bulk preview checks the action against.
const PREVIEW_CHECKS: usize = 1000;

enum SnapshotRead {
    Saga(Box<Snapshot>),
    NoSaga,
    DefinitionNotLoaded(u32),
}

/// How a plan's writes ended.
enum Flushed {
    /// Every write done; `replayed` describes each applied event's outcome.
    Written { replayed: Vec<String> },
    /// An event did not come to what the plan expected.
    Refused(OpsError),
}

/// Who acts, why, on what they saw.
#[derive(Debug, Clone)]
pub struct Request {
    pub order_id: OrderId,
    pub action: Action,
    pub expected_version: SagaVersion,
    pub actor: String,
    pub reason: String,
    pub dry_run: bool,
    pub job_id: Option<String>,
}

/// What an action did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = OpsReport)]
pub struct Report {
    #[schema(value_type = i64)]
    pub order_id: OrderId,
    #[schema(value_type = String)]
    pub action: &'static str,
    pub dry_run: bool,
    pub state_before: String,
    pub state_after: String,
    #[schema(value_type = u32)]
    pub version_before: SagaVersion,
    #[schema(value_type = u32)]
    pub version_after: SagaVersion,
    pub order_status_before: Option<OrderStatus>,
    pub order_status_after: Option<OrderStatus>,
    /// Messages written to the outbox: type, event id and the command id when there is one.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    pub timers_after: Vec<crate::store::timers::TimerView>,
    pub quarantined_after: Option<String>,
    /// Outcome of each replayed parked event (release).
    pub replayed: Vec<String>,
    /// Everything the action does, in words: state and status, each command
    /// (a re-send under the same id labelled), timers that fire at once and
    /// where they lead, the quarantine.
    pub consequences: Vec<String>,
}

fn validate_actor(actor: &str, reason: &str) -> Result<(), OpsError> {
    if actor.trim().is_empty() || actor.len() > 128 {
        return Err(OpsError::BadRequest("actor is required (1-128 characters), e.g. ops:alice".into()));
    }
    if reason.trim().is_empty() || reason.len() > 1000 {
        return Err(OpsError::BadRequest("reason is required (1-1000 characters): say why".into()));
    }
    Ok(())
}

/// The ops surface over one database. Cheap to clone.
#[derive(Clone)]
pub struct Ops {
    pub db: Db,
    pub sagas: SagaStore,
    pub metrics: Option<Metrics>,
    pub relay_wakeup: Option<Arc<RelayWakeup>>,
    pub jobs: Jobs,
}

impl Ops {
    pub fn new(db: Db, sagas: SagaStore, metrics: Option<Metrics>, relay_wakeup: Option<Arc<RelayWakeup>>) -> Ops {
        Ops { db, sagas, metrics, relay_wakeup, jobs: Jobs::default() }
    }

    /// Everything about one saga.
    pub async fn show(&self, order_id: OrderId) -> Result<Value, OpsError> {
        let catalog = &self.sagas.catalog;
        let saga = inspect::summary_of(&self.db, catalog, order_id).await?.ok_or(OpsError::NotFound(order_id))?;
        let order = orders::get(&self.db, order_id).await?;
        let def = catalog.get(saga.definition_version);
        let state = def.and_then(|d| d.state(&saga.state));
        let accepts: Vec<&String> = state.map(|s| s.on.keys().collect()).unwrap_or_default();
        let manual: Vec<&String> = def
            .map(|d| d.manual_events.keys().filter(|m| state.is_some_and(|s| s.on.contains_key(*m))).collect())
            .unwrap_or_default();
        let timers = crate::store::timers::for_order(&self.db.pool, order_id).await?;
        let parked = inspect::parked(&self.db, order_id, false).await?;
        let (actions, described): (Vec<Action>, Vec<plan::describe::Described>) =
            self.allowed_now(order_id).await?.into_iter().unzip();
        // Why it is here, in words, when it needs someone.
        let why_here = inspect::why_here(&self.db, catalog, &saga).await?;
        let transitions = inspect::transitions(&self.db, order_id).await?;
        // Whether the newest definition would treat it differently (it stays
        // on its own version).
        let newer = match def {
            Some(old) if catalog.latest().version > saga.definition_version && !saga.terminal => {
                let history = crate::saga::preview::History {
                    order_id,
                    definition_version: saga.definition_version,
                    state: saga.state.clone(),
                    transitions: transitions
                        .iter()
                        .filter(|t| inspect::moved_something(t.reason.as_deref()))
                        .map(|t| (t.from.clone(), t.event.clone(), t.to.clone()))
                        .collect(),
                };
                let latest = catalog.latest();
                Some(json!({"version": latest.version, "verdict": crate::saga::preview::judge(old, latest, &history)}))
            }
            _ => None,
        };
        let state_description = state.and_then(|s| s.description.clone());
        Ok(json!({
            "needs": why_here.map(|a| json!({"need": a.need, "why": a.why})),
            "state_description": state_description,
            "newer_definition": newer,
            "saga": saga,
            "definition": {
                "loaded": def.is_some(),
                "current_step": state.and_then(|s| s.step.clone()),
                "accepts": accepts,
                "manual_events_allowed_now": manual,
                "actions_allowed_now": actions,
                // Index by index: each allowed action's label and what it does.
                "action_descriptions": described,
                "diagram": def.map(|d| crate::saga::graph::layout(d)),
            },
            "order": order,
            "order_history": orders::history(&self.db, order_id).await?,
            "transitions": transitions,
            "timers": timers,
            "outbox_unpublished": inspect::unpublished(&self.db, order_id).await?,
            "inbox": inspect::inbox(&self.db, order_id).await?,
            "parked": parked,
            "dead_letters": inspect::dead_letters(&self.db, order_id).await?,
        }))
    }

    /// The actions an operator may take on the saga now: those whose plan
    /// succeeds on a snapshot read as an action would read it, without locks.
    /// Each with its label and what it does, in words.
    pub async fn allowed_now(&self, order_id: OrderId) -> Result<Vec<(Action, plan::describe::Described)>, StoreError> {
        let mut tx = self.db.begin().await?;
        let read = self.snapshot(&mut tx, order_id, false).await;
        tx.rollback().await.ctx("ending the read")?;
        Ok(match read? {
            SnapshotRead::Saga(snap) => allowed_actions(&snap)
                .into_iter()
                .map(|a| {
                    let d = plan::describe::describe(&a, &snap);
                    (a, d)
                })
                .collect(),
            SnapshotRead::NoSaga | SnapshotRead::DefinitionNotLoaded(_) => Vec::new(),
        })
    }

    /// Runs one action (or its dry run).
    pub async fn act(&self, req: &Request) -> Result<Report, OpsError> {
        validate_actor(&req.actor, &req.reason)?;
        let result = crate::store::retry(|| async {
            let mut tx = self.db.begin().await?;
            match self.act_in_tx(&mut tx, req).await {
                Ok(Attempt::Done(report)) => {
                    if req.dry_run {
                        tx.rollback().await.ctx("rolling back the dry run")?;
                    } else {
                        let detail = serde_json::to_string(&report.messages).unwrap_or_default();
                        audit(
                            &mut tx,
                            req,
                            Some(report.version_before),
                            Some(report.version_after),
                            "applied",
                            &detail,
                        )
                        .await?;
                        tx.commit().await.ctx("committing the ops action")?;
                        // Applied and audited, the caller not answered yet.
                        crate::failpoint::hit("ops.after_commit");
                    }
                    Ok(Ok(report))
                }
                Ok(Attempt::Refused(e)) => {
                    tx.rollback().await.ctx("rolling back")?;
                    Ok(Err(e))
                }
                Err(e) => Err(e),
            }
        })
        .await?;
        let outcome = if result.is_ok() { "applied" } else { "refused" };
        if let Some(m) = &self.metrics
            && !req.dry_run
        {
            m.ops
                .ops_actions_total
                .get_or_create(&ActionLabel { action: req.action.name().into(), result: outcome.into() })
                .inc();
        }
        match &result {
            Ok(report) if !req.dry_run => {
                tracing::info!(
                    order_id = req.order_id.get(),
                    action = req.action.name(),
                    actor = %req.actor,
                    reason = %req.reason,
                    state = %report.state_after,
                    "ops action applied"
                );
                if let Some(w) = &self.relay_wakeup {
                    w.rows_committed_anywhere();
                }
            }
            Err(e) if !req.dry_run => {
                // Refusals are audited too: who tried what, and why it was refused.
                let mut tx = self.db.begin().await?;
                audit(&mut tx, req, Some(req.expected_version), None, "refused", &e.to_string()).await?;
                tx.commit().await.ctx("committing the audit row")?;
            }
            _ => {}
        }
        result
    }

    /// Reads what every action is decided on, in a fixed number of
    /// statements: the saga row, its timers and parked events (locked when
    /// `lock`, for an action), the count of earlier retries, the database clock.
    async fn snapshot(&self, tx: &mut Tx, order_id: OrderId, lock: bool) -> Result<SnapshotRead, StoreError> {
        let found = if lock { shell::lock_one(tx, order_id).await? } else { shell::read_one(tx, order_id).await? };
        let Some((saga, quarantined)) = found else { return Ok(SnapshotRead::NoSaga) };
        let Some(def) = self.sagas.catalog.get(saga.definition_version).cloned() else {
            return Ok(SnapshotRead::DefinitionNotLoaded(saga.definition_version));
        };
        let timers = if lock {
            timers::lock_for_order(tx, order_id).await?
        } else {
            timers::for_order(&mut **tx, order_id).await?
        };
        let timers = timers
            .into_iter()
            .map(|t| ArmedTimer { name: t.name, armed_version: t.armed_version, due: t.due_at })
            .collect();
        let newer = self.sagas.catalog.versions().filter(|d| d.version > def.version).cloned().collect();
        let parked = parked::unresolved_parked(tx, order_id, lock).await?;
        let retries = audit::count_applied(tx, order_id, Action::RetryStep.name()).await?;
        // Database time, like every transition (`reschedule_timer after=…` included).
        let now = crate::store::db_now(tx).await?;
        let trace = crate::telemetry::trace_context::TraceContext::new_root();
        Ok(SnapshotRead::Saga(Box::new(Snapshot {
            def,
            newer,
            saga,
            quarantined,
            timers,
            parked,
            retries,
            now,
            trace,
        })))
    }

    /// One action inside `tx`: snapshot, pure plan, writes, report. A refusal
    /// leaves the caller to roll back; only a store error is retried.
    async fn act_in_tx(&self, tx: &mut Tx, req: &Request) -> Result<Attempt, StoreError> {
        let order_id = req.order_id;
        let snap = match self.snapshot(tx, order_id, true).await? {
            SnapshotRead::Saga(s) => s,
            SnapshotRead::NoSaga => return Ok(Attempt::Refused(OpsError::NotFound(order_id))),
            SnapshotRead::DefinitionNotLoaded(v) => {
                return Ok(Attempt::Refused(OpsError::NotAllowed(format!(
                    "definition version {v} is not loaded; deploy it first"
                ))));
            }
        };
        if snap.saga.version != req.expected_version {
            let changes = crate::store::inspect::changes_since(tx, order_id, req.expected_version).await?;
            return Ok(Attempt::Refused(OpsError::StaleVersion {
                expected: req.expected_version,
                actual: snap.saga.version,
                changes,
            }));
        }
        let who = Actor { actor: &req.actor, reason: &req.reason };
        let plan = match plan::plan(&req.action, &snap, who) {
            Ok(p) => p,
            Err(refusal) => return Ok(Attempt::Refused(refusal.into())),
        };
        let status_before = orders::head(tx, order_id, false).await?.map(|h| h.status);
        let sent_before: Vec<String> = outbox::outbox_since(tx, order_id, 0)
            .await?
            .into_iter()
            .filter_map(|(_, _, payload)| payload.get("command_id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let quarantined_before = snap.quarantined.is_some();
        let outbox_mark = outbox::max_outbox_id(tx).await?;
        let migrated = plan.writes.iter().find_map(|w| match w {
            Write::Migrate { migrated, .. } => Some(migrated.as_ref().clone()),
            _ => None,
        });
        let replayed = match self.flush(tx, &snap, plan, req.dry_run).await? {
            Flushed::Written { replayed } => replayed,
            Flushed::Refused(e) => return Ok(Attempt::Refused(e)),
        };
        let Some((after, quarantined_after)) = shell::lock_one(tx, order_id).await? else {
            return Ok(Attempt::Refused(OpsError::NotFound(order_id)));
        };
        let written = outbox::outbox_since(tx, order_id, outbox_mark).await?;
        let messages = written
            .iter()
            .map(|(event_type, event_id, payload)| {
                json!({"type": event_type, "event_id": event_id, "command_id": payload.get("command_id")})
            })
            .collect();
        let timers_after = crate::store::timers::for_order(&mut **tx, order_id).await?;
        let status_after = orders::head(tx, order_id, false).await?.map(|h| h.status);
        let said: Vec<(String, Option<String>)> = written
            .iter()
            .map(|(t, _, p)| (t.clone(), p.get("command_id").and_then(Value::as_str).map(str::to_owned)))
            .collect();
        let timers: Vec<(String, chrono::DateTime<chrono::Utc>)> =
            timers_after.iter().map(|t| (t.name.clone(), t.due_at)).collect();
        let (sb, sa) = (status_before.map(|s| s.as_str()), status_after.map(|s| s.as_str()));
        let consequences = plan::consequences::consequences(
            &plan::consequences::Outcome {
                state_before: &snap.saga.state,
                state_after: &after.state,
                status_before: sb,
                status_after: sa,
                messages: &said,
                timers_after: &timers,
                quarantined_after: quarantined_after.as_deref(),
                quarantined_before,
                replayed: &replayed,
                migrated: migrated.as_ref(),
            },
            // What its timers lead to, in the definition it runs on now.
            self.sagas.catalog.get(after.definition_version).unwrap_or(&snap.def),
            snap.now,
            &sent_before,
        );
        Ok(Attempt::Done(Report {
            order_id,
            action: req.action.name(),
            dry_run: req.dry_run,
            state_before: snap.saga.state,
            state_after: after.state,
            version_before: snap.saga.version,
            version_after: after.version,
            order_status_before: status_before,
            order_status_after: status_after,
            messages,
            timers_after,
            quarantined_after,
            replayed,
            consequences,
        }))
    }

    /// Performs a plan's writes in order. Events go through the saga shell;
    /// one that does not come to what the plan expects refuses the action.
    async fn flush(&self, tx: &mut Tx, snap: &Snapshot, plan: Plan, dry_run: bool) -> Result<Flushed, StoreError> {
        let order_id = snap.saga.order_id;
        let mut replayed = Vec::new();
        for write in plan.writes {
            match write {
                Write::Outbox(msg) => self.sagas.resend(tx, &msg, snap.now).await?,
                Write::TimerDue { timer, due } => operator::move_timer(tx, order_id, &timer, due).await?,
                Write::DeleteTimer { timer } => operator::disarm_timer(tx, order_id, &timer).await?,
                Write::ResolveParked { ids, resolution } => {
                    operator::resolve_parked(tx, &ids, resolution.as_str()).await?
                }
                Write::ClearQuarantine => shell::clear_quarantine(tx, order_id, snap.now).await?,
                Write::ForgetInbox(ids) => operator::forget_inbox(tx, &ids).await?,
                Write::Migrate { migrated, event_id, actor } => {
                    shell::write_migration(tx, &migrated, &event_id, &actor, snap.now).await?
                }
                Write::Apply { events, expect } => {
                    let r = self.sagas.apply_in_tx(tx, &events, LockMode::Wait).await?;
                    let first = r.outcomes.first();
                    let stands = match expect {
                        Expect::Applied => matches!(first, Some(InboundOutcome::Applied { .. })),
                        Expect::AppliedOrIgnored => {
                            matches!(first, Some(InboundOutcome::Applied { .. } | InboundOutcome::Ignored))
                        }
                        Expect::Any => true,
                    };
                    if !stands {
                        let what = first.map_or_else(|| "nothing happened".to_owned(), ToString::to_string);
                        return Ok(Flushed::Refused(OpsError::NotAllowed(format!("not applied: {what}"))));
                    }
                    if !dry_run {
                        // A dry run is rolled back: it records no metric and no alert log.
                        self.record(&r);
                    }
                    replayed = r.outcomes.iter().map(ToString::to_string).collect();
                }
            }
        }
        Ok(Flushed::Written { replayed })
    }

    fn record(&self, r: &shell::BatchResult) {
        if let Some(m) = &self.metrics {
            crate::orchestrator::record_batch(m, r);
        }
    }

    /// Why `action` would be refused on the saga now (its plan on a snapshot
    /// read without locks), or `None` when it would be applied.
    async fn would_refuse(
        &self,
        order_id: OrderId,
        action: &Action,
        who: Actor<'_>,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.db.begin().await?;
        let read = self.snapshot(&mut tx, order_id, false).await;
        tx.rollback().await.ctx("ending the read")?;
        Ok(match read? {
            SnapshotRead::Saga(snap) => plan::plan(action, &snap, who).err().map(|r| r.to_string()),
            SnapshotRead::NoSaga => Some("the order has no saga".into()),
            SnapshotRead::DefinitionNotLoaded(v) => Some(format!("definition version {v} is not loaded here")),
        })
    }

    /// Bulk action: preview (dry run: how many, which first, and how many the
    /// action would be refused on, and why) or start a job.
    pub async fn bulk(&self, b: &BulkRequest) -> Result<Value, OpsError> {
        validate_actor(&b.actor, &b.reason)?;
        let catalog = &self.sagas.catalog;
        let matched = inspect::count(&self.db, catalog, &b.filter).await?;
        let limit = b.limit.unwrap_or(1000).min(10_000);
        let selected = inspect::select_for_bulk(&self.db, catalog, &b.filter, limit).await?;
        if b.dry_run {
            // Each selected saga's plan, as the job would make it (at most
            // PREVIEW_CHECKS of them: a preview must answer quickly).
            let who = Actor { actor: &b.actor, reason: &b.reason };
            let mut refusals: std::collections::BTreeMap<String, usize> = Default::default();
            let checked = selected.len().min(PREVIEW_CHECKS);
            for (id, _) in &selected[..checked] {
                if let Some(why) = self.would_refuse(*id, &b.action, who).await? {
                    *refusals.entry(why).or_default() += 1;
                }
            }
            let mut reasons: Vec<(String, usize)> = refusals.into_iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            return Ok(json!({
                "dry_run": true,
                "action": b.action.name(),
                "matched": matched,
                "would_act_on": selected.len(),
                "checked": checked,
                "would_refuse": reasons.iter().map(|r| r.1).sum::<usize>(),
                "refusals": reasons.iter().take(5).map(|(why, n)| json!({"reason": why, "count": n})).collect::<Vec<_>>(),
                "sample": selected.iter().take(20).map(|(id, v)| json!({"order_id": id, "version": v})).collect::<Vec<_>>(),
            }));
        }
        let spec = self.create_job(b, &selected).await?;
        let (ops, spec2) = (self.clone(), spec.clone());
        tokio::spawn(async move { ops.run_job(&spec2, |_, _| {}).await });
        Ok(json!({"job_id": spec.job_id, "matched": matched, "selected": b.limit.map(|_| limit)}))
    }
}

/// The audit row of one action (applied or refused).
async fn audit(
    tx: &mut Tx,
    req: &Request,
    version_before: Option<SagaVersion>,
    version_after: Option<SagaVersion>,
    result: &str,
    detail: &str,
) -> Result<(), StoreError> {
    audit::audit(
        tx,
        Some(req.order_id),
        req.action.name(),
        &serde_json::to_value(&req.action).unwrap_or(Value::Null),
        &req.actor,
        &req.reason,
        version_before,
        version_after,
        result,
        Some(detail),
        req.job_id.as_deref(),
    )
    .await
}
