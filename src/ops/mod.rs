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
//! * goes through the same transition function and shell as a normal event,
//!   so it emits the same domain events and commands.

mod actions;
pub mod cli;
mod gauges;
mod jobs;

pub use self::actions::{Action, allowed_actions};
pub use self::gauges::refresh_gauges;
pub use self::jobs::{BulkRequest, JOB_RESULTS_KEPT, JobStatus, Jobs};

use std::sync::Arc;

use std::time::Duration;

use serde::Serialize;

use serde_json::{Value, json};

use tokio::sync::Notify;

use crate::domain::OrderStatus;

use crate::saga::{Event, EventBody};

use crate::store::inspect;

use crate::store::sagas::{self as shell, Inbound, InboundOutcome, LockMode, SOURCE_REPLAY, SagaStore};

use crate::store::{Ctx, Db, StoreError, Tx, audit, inbox, orders, outbox, parked, timers};

use crate::telemetry::metrics::{ActionLabel, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("order {0} has no saga")]
    NotFound(i64),
    #[error("the saga is at version {actual}, not {expected}: look at it again")]
    StaleVersion { expected: u32, actual: u32 },
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who acts, why, on what they saw.
#[derive(Debug, Clone)]
pub struct Request {
    pub order_id: i64,
    pub action: Action,
    pub expected_version: u32,
    pub actor: String,
    pub reason: String,
    pub dry_run: bool,
    pub job_id: Option<String>,
}

/// What an action did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = OpsReport)]
pub struct Report {
    pub order_id: i64,
    #[schema(value_type = String)]
    pub action: &'static str,
    pub dry_run: bool,
    pub state_before: String,
    pub state_after: String,
    pub version_before: u32,
    pub version_after: u32,
    pub order_status_before: Option<OrderStatus>,
    pub order_status_after: Option<OrderStatus>,
    /// Messages written to the outbox: type, event id and the command id when there is one.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    pub timers_after: Vec<crate::store::timers::TimerView>,
    pub quarantined_after: Option<String>,
    /// Outcome of each replayed parked event (release).
    pub replayed: Vec<String>,
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
    pub relay_wakeup: Option<Arc<Notify>>,
    pub jobs: Jobs,
}

impl Ops {
    pub fn new(db: Db, sagas: SagaStore, metrics: Option<Metrics>, relay_wakeup: Option<Arc<Notify>>) -> Ops {
        Ops { db, sagas, metrics, relay_wakeup, jobs: Jobs::default() }
    }

    /// Everything about one saga.
    pub async fn show(&self, order_id: i64) -> Result<Value, OpsError> {
        let catalog = &self.sagas.catalog;
        let saga = inspect::summary_of(&self.db, catalog, order_id).await?.ok_or(OpsError::NotFound(order_id))?;
        let order = orders::get(&self.db, order_id as u64).await?;
        let def = catalog.get(saga.definition_version);
        let state = def.and_then(|d| d.state(&saga.state));
        let accepts: Vec<&String> = state.map(|s| s.on.keys().collect()).unwrap_or_default();
        let manual: Vec<&String> = def
            .map(|d| d.manual_events.keys().filter(|m| state.is_some_and(|s| s.on.contains_key(*m))).collect())
            .unwrap_or_default();
        let timers = crate::store::timers::for_order(&self.db.pool, order_id).await?;
        let parked = inspect::parked(&self.db, order_id, false).await?;
        let poison = parked.iter().any(|p| p.poison && p.resolution.is_none());
        let actions = match def {
            Some(d) => {
                let names: Vec<&str> = timers.iter().map(|t| t.name.as_str()).collect();
                allowed_actions(d, &saga.state, saga.quarantined.is_some(), poison, &names)
            }
            None => Vec::new(),
        };
        Ok(json!({
            "saga": saga,
            "definition": {
                "loaded": def.is_some(),
                "current_step": state.and_then(|s| s.step.clone()),
                "accepts": accepts,
                "manual_events_allowed_now": manual,
                "actions_allowed_now": actions,
                "diagram": def.map(|d| crate::saga::graph::layout(d)),
            },
            "order": order,
            "order_history": orders::history(&self.db, order_id as u64).await?,
            "transitions": inspect::transitions(&self.db, order_id).await?,
            "timers": timers,
            "outbox_unpublished": inspect::unpublished(&self.db, order_id).await?,
            "inbox": inspect::inbox(&self.db, order_id).await?,
            "parked": parked,
            "dead_letters": inspect::dead_letters(&self.db, order_id).await?,
        }))
    }

    /// Runs one action (or its dry run).
    pub async fn act(&self, req: &Request) -> Result<Report, OpsError> {
        validate_actor(&req.actor, &req.reason)?;
        let result = crate::store::retry(|| async {
            let mut tx = self.db.begin().await?;
            let r = self.act_in_tx(&mut tx, req).await;
            match r {
                Ok(Ok(report)) => {
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
                Ok(Err(e)) => {
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
                    order_id = req.order_id,
                    action = req.action.name(),
                    actor = %req.actor,
                    reason = %req.reason,
                    state = %report.state_after,
                    "ops action applied"
                );
                if let Some(w) = &self.relay_wakeup {
                    w.notify_one();
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

    async fn act_in_tx(&self, tx: &mut Tx, req: &Request) -> Result<Result<Report, OpsError>, StoreError> {
        let order_id = req.order_id;
        let Some((inst, quarantined)) = shell::lock_one(tx, order_id).await? else {
            return Ok(Err(OpsError::NotFound(order_id)));
        };
        if inst.version != req.expected_version {
            return Ok(Err(OpsError::StaleVersion { expected: req.expected_version, actual: inst.version }));
        }
        let Some(def) = self.sagas.catalog.get(inst.definition_version).cloned() else {
            return Ok(Err(OpsError::NotAllowed(format!(
                "definition version {} is not loaded; deploy it first",
                inst.definition_version
            ))));
        };
        let status_before = orders::head(tx, order_id as u64, false).await?.map(|h| h.status);
        let outbox_mark = outbox::max_outbox_id(tx).await?;
        // Database time, like every transition (`reschedule_timer after=…` included).
        let now = crate::store::db_now(tx).await?;
        let mut replayed = Vec::new();
        let manual = |name: String| Inbound {
            event_id: format!("ops:{order_id}:{}:{name}", inst.version),
            order_id: Some(order_id),
            event_name: name.clone(),
            event: Ok(Event {
                id: format!("ops:{order_id}:{}:{name}", inst.version),
                order_id,
                body: EventBody::Manual {
                    name,
                    actor: req.actor.clone(),
                    reason_code: None,
                    comment: Some(req.reason.clone()),
                },
            }),
            source: "ops".into(),
            trace: Some(crate::telemetry::trace_context::TraceContext::new_root()),
            raw: None,
        };
        let need_not_quarantined = || match &quarantined {
            Some(q) => Err(OpsError::NotAllowed(format!(
                "the saga is quarantined ({q}); release it or skip the poison event first"
            ))),
            None => Ok(()),
        };
        match &req.action {
            Action::RetryStep => {
                if let Err(e) = need_not_quarantined() {
                    return Ok(Err(e));
                }
                let retry_no = count_audit(tx, order_id, "retry_step").await? + 1;
                let msg = match crate::saga::retry_current_step(&def, &inst, now, retry_no) {
                    Ok(m) => m,
                    Err(e) => return Ok(Err(OpsError::NotAllowed(e.to_string()))),
                };
                let row = self.sagas.outbox.row(&msg, None)?;
                crate::store::outbox::insert(tx, &[row], now).await?;
            }
            Action::FireTimer { timer } => {
                if let Err(e) = need_not_quarantined() {
                    return Ok(Err(e));
                }
                let Some((_, armed_version)) = timers::lock_timer(tx, order_id, timer).await? else {
                    return Ok(Err(OpsError::NotAllowed(format!("timer {timer} is not armed"))));
                };
                timers::set_timer_due(tx, order_id, timer, None).await?;
                let id = crate::timers::firing_id(order_id, timer, armed_version);
                let inbound = Inbound {
                    event_id: id.clone(),
                    order_id: Some(order_id),
                    event_name: format!("{}{timer}", crate::saga::definition::TIMER_PREFIX),
                    event: Ok(Event { id, order_id, body: EventBody::Timer { name: timer.clone() } }),
                    source: "ops".into(),
                    trace: Some(crate::telemetry::trace_context::TraceContext::new_root()),
                    raw: None,
                };
                let r = self.sagas.apply_in_tx(tx, std::slice::from_ref(&inbound), LockMode::Wait).await?;
                if !req.dry_run {
                    // A dry run is rolled back: it records no metric and no alert log.
                    self.record(&r);
                }
                match r.outcomes.first() {
                    Some(InboundOutcome::Applied { .. } | InboundOutcome::Ignored) => {}
                    other => return Ok(Err(OpsError::NotAllowed(format!("the timer could not fire: {other:?}")))),
                }
            }
            Action::RescheduleTimer { timer, at, after } => {
                if timers::lock_timer(tx, order_id, timer).await?.is_none() {
                    return Ok(Err(OpsError::NotAllowed(format!("timer {timer} is not armed"))));
                }
                let latest =
                    chrono::Duration::from_std(crate::saga::MAX_TIMER).ok().and_then(|d| now.checked_add_signed(d));
                let due = match (at, after) {
                    (Some(t), None) if latest.is_some_and(|l| *t <= l) && t.timestamp() >= 0 => *t,
                    (Some(t), None) => {
                        return Ok(Err(OpsError::BadRequest(format!(
                            "at: {t} is before 1970 or more than 366 days away; a timer may last at most that"
                        ))));
                    }
                    (None, Some(d)) => {
                        let parsed = humantime::parse_duration(d).map_err(|e| format!("after: {e} (e.g. 30m)"));
                        match parsed.and_then(|d| crate::saga::check_timer(d).map_err(|e| format!("after: {e}"))) {
                            Ok(d) => match chrono::Duration::from_std(d).ok().and_then(|d| now.checked_add_signed(d)) {
                                Some(due) => due,
                                None => return Ok(Err(OpsError::BadRequest("after: out of range".into()))),
                            },
                            Err(e) => return Ok(Err(OpsError::BadRequest(e))),
                        }
                    }
                    _ => {
                        return Ok(Err(OpsError::BadRequest(
                            "give exactly one of `at` (RFC 3339) or `after` (e.g. 30m)".into(),
                        )));
                    }
                };
                timers::set_timer_due(tx, order_id, timer, Some(due)).await?;
            }
            Action::CancelTimer { timer } => {
                if timers::lock_timer(tx, order_id, timer).await?.is_none() {
                    return Ok(Err(OpsError::NotAllowed(format!("timer {timer} is not armed"))));
                }
                timers::delete_timer(tx, order_id, timer).await?;
            }
            Action::Cancel | Action::Force { .. } => {
                if let Err(e) = need_not_quarantined() {
                    return Ok(Err(e));
                }
                let event = match &req.action {
                    Action::Force { event } => event.clone(),
                    _ => match def.manual_event_for_status(OrderStatus::Cancelled) {
                        Some(m) => m.name.clone(),
                        None => {
                            return Ok(Err(OpsError::NotAllowed(
                                "the definition has no manual event for CANCELLED".into(),
                            )));
                        }
                    },
                };
                if !def.manual_events.contains_key(&event) {
                    return Ok(Err(OpsError::NotAllowed(format!(
                        "{event:?} is not a manual event of the definition (declared: {})",
                        def.manual_events.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))));
                }
                if !def.state(&inst.state).is_some_and(|s| s.on.contains_key(&event)) {
                    return Ok(Err(OpsError::NotAllowed(format!(
                        "transition not in the definition: state {} does not accept {event}",
                        inst.state
                    ))));
                }
                let r = self.sagas.apply_in_tx(tx, &[manual(event)], LockMode::Wait).await?;
                if !req.dry_run {
                    // A dry run is rolled back: it records no metric and no alert log.
                    self.record(&r);
                }
                match r.outcomes.first() {
                    Some(InboundOutcome::Applied { .. }) => {}
                    Some(InboundOutcome::Refused(refusal)) => {
                        return Ok(Err(OpsError::NotAllowed(format!("refused: {refusal:?}"))));
                    }
                    other => return Ok(Err(OpsError::NotAllowed(format!("not applied: {other:?}")))),
                }
            }
            Action::Release | Action::SkipPoison => {
                if quarantined.is_none() {
                    return Ok(Err(OpsError::NotAllowed("the saga is not quarantined".into())));
                }
                let mut parked = parked::unresolved_parked(tx, order_id).await?;
                if req.action == Action::SkipPoison {
                    let poison: Vec<u64> = parked.iter().filter(|p| p.poison).map(|p| p.id).collect();
                    if poison.is_empty() {
                        return Ok(Err(OpsError::NotAllowed("no unresolved poison event to skip".into())));
                    }
                    parked::resolve_parked(tx, &poison, "skipped").await?;
                    parked.retain(|p| !p.poison);
                }
                let mut inbound = Vec::new();
                for p in &parked {
                    match parked::parked_to_event(order_id, &p.event_id, &p.event_name, p.payload.as_deref()) {
                        Ok(event) => inbound.push(Inbound {
                            event_id: p.event_id.clone(),
                            order_id: Some(order_id),
                            event_name: p.event_name.clone(),
                            event: Ok(event),
                            source: SOURCE_REPLAY.into(),
                            trace: p
                                .traceparent
                                .as_deref()
                                .and_then(|tp| crate::telemetry::trace_context::TraceContext::extract(tp, None)),
                            raw: None,
                        }),
                        Err(e) => {
                            return Ok(Err(OpsError::NotAllowed(format!(
                                "parked event {} cannot be replayed ({e}); skip it with skip_poison",
                                p.event_id
                            ))));
                        }
                    }
                }
                shell::clear_quarantine(tx, order_id).await?;
                inbox::forget_inbox(tx, &parked.iter().map(|p| p.event_id.clone()).collect::<Vec<_>>()).await?;
                parked::resolve_parked(tx, &parked.iter().map(|p| p.id).collect::<Vec<_>>(), "replayed").await?;
                let r = self.sagas.apply_in_tx(tx, &inbound, LockMode::Wait).await?;
                if !req.dry_run {
                    // A dry run is rolled back: it records no metric and no alert log.
                    self.record(&r);
                }
                replayed = r.outcomes.iter().map(|o| format!("{o:?}")).collect();
            }
        }
        let Some((after, quarantined_after)) = shell::lock_one(tx, order_id).await? else {
            return Ok(Err(OpsError::NotFound(order_id)));
        };
        let messages = outbox::outbox_since(tx, order_id, outbox_mark)
            .await?
            .into_iter()
            .map(|(event_type, event_id, payload)| {
                json!({"type": event_type, "event_id": event_id, "command_id": payload.get("command_id")})
            })
            .collect();
        let timers_after = crate::store::timers::for_order(&mut **tx, order_id).await?;
        let status_after = orders::head(tx, order_id as u64, false).await?.map(|h| h.status);
        Ok(Ok(Report {
            order_id,
            action: req.action.name(),
            dry_run: req.dry_run,
            state_before: inst.state,
            state_after: after.state,
            version_before: inst.version,
            version_after: after.version,
            order_status_before: status_before,
            order_status_after: status_after,
            messages,
            timers_after,
            quarantined_after,
            replayed,
        }))
    }

    fn record(&self, r: &shell::BatchResult) {
        if let Some(m) = &self.metrics {
            crate::events::record_batch(m, r);
        }
    }

    /// Bulk action: preview (dry run: how many, which first) or start a job.
    pub async fn bulk(&self, b: &BulkRequest) -> Result<Value, OpsError> {
        validate_actor(&b.actor, &b.reason)?;
        let catalog = &self.sagas.catalog;
        let matched = inspect::count(&self.db, catalog, &b.filter).await?;
        let limit = b.limit.unwrap_or(1000).min(10_000);
        let selected = inspect::select_for_bulk(&self.db, catalog, &b.filter, limit).await?;
        if b.dry_run {
            return Ok(json!({
                "dry_run": true,
                "action": b.action.name(),
                "matched": matched,
                "would_act_on": selected.len(),
                "sample": selected.iter().take(20).map(|(id, v)| json!({"order_id": id, "version": v})).collect::<Vec<_>>(),
            }));
        }
        let job = self.jobs.start(b.action.name(), selected.len());
        let (ops, b2, job2) = (self.clone(), b.clone(), job.clone());
        tokio::spawn(async move {
            let jobs = ops.jobs.clone();
            ops.run_bulk(&b2, selected, &job2, b2.rate_per_second, |order_id, r| {
                jobs.progress(&job2, order_id, r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            })
            .await;
            jobs.finish(&job2);
        });
        Ok(json!({"job_id": job, "matched": matched, "selected": b.limit.map(|_| limit)}))
    }

    /// Runs a bulk job: each saga acted on at the version it had when selected
    /// (changed since → refused as stale), at most `rate` actions per second.
    /// `progress` sees every result; returns (applied, refused).
    pub async fn run_bulk(
        &self,
        b: &BulkRequest,
        selected: Vec<(i64, u32)>,
        job: &str,
        rate: u32,
        mut progress: impl FnMut(i64, &Result<Report, OpsError>),
    ) -> (usize, usize) {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        let (mut applied, mut refused) = (0, 0);
        for (order_id, version) in selected {
            tick.tick().await;
            let req = Request {
                order_id,
                action: b.action.clone(),
                expected_version: version,
                actor: b.actor.clone(),
                reason: b.reason.clone(),
                dry_run: false,
                job_id: Some(job.to_owned()),
            };
            let r = self.act(&req).await;
            if r.is_ok() {
                applied += 1;
            } else {
                refused += 1;
            }
            progress(order_id, &r);
        }
        (applied, refused)
    }
}

/// The audit row of one action (applied or refused).
async fn audit(
    tx: &mut Tx,
    req: &Request,
    version_before: Option<u32>,
    version_after: Option<u32>,
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

async fn count_audit(tx: &mut Tx, order_id: i64, action: &str) -> Result<u32, StoreError> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ops_audit WHERE order_id = ? AND action = ? AND result = 'applied'")
            .bind(order_id)
            .bind(action)
            .fetch_one(&mut **tx)
            .await
            .ctx("counting earlier retries")?;
    Ok(n as u32)
}
