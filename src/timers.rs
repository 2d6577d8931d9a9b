//! The timeout sweeper: fires due timers through the saga transition function,
//! judged by **event time**.
//!
//! A payment timeout means "the payment did not arrive in time", not "this
//! process did not read it in time". So a due timer fires only when every
//! partition of the topics whose events could still move its saga out of its
//! state has been consumed past the timer's due time plus the allowed lateness
//! (producer clocks are not the database's). The consumer reports those
//! watermarks into `consumer_watermarks` (`store::watermarks`): per partition,
//! the time through which every message has been applied — the timestamp of the
//! last applied message, or the time at which it had applied everything up to
//! the partition's end offset. After an outage, a slow rebalance or a backlog,
//! timers wait until the replies that were produced before their deadline have
//! been applied; a paid order is never cancelled because its payment was read late.
//!
//! A timer waits at most `ORDER_SAGA_TIMER_MAX_DEFER` past its due time (a
//! partition nobody consumes must not hold it for ever); then it fires and
//! `saga_timers_fired_past_bound_total` counts it. While timers wait,
//! `saga_timers_deferred` and `saga_timer_watermark_lag_seconds` say so.
//!
//! Scheduled with tokio-cron-scheduler (only the trigger: the timers
//! themselves are rows in `saga_timers`, written in the transaction of the
//! transition that armed them). Each sweep claims due timers in short READ
//! COMMITTED transactions: the saga rows are locked `FOR UPDATE SKIP LOCKED`
//! (another sweeper or a consumer batch holding one simply means "not now"),
//! the timer row is re-checked against database time and deleted in the same
//! transaction as the transition it causes. A timer survives any crash (it is
//! only deleted by the commit that applies it) and never fires twice in effect.
//! A replica only sweeps sagas of definition versions it has loaded: during a
//! rolling deploy, the newer replicas fire the newer sagas' timers.
//!
//! External schedulers can trigger a sweep: `order-saga timeouts sweep` or
//! `POST /ops/timeouts/sweep`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::contracts::{MessageKind, Role};
use crate::domain::{OrderId, SagaVersion};
use crate::orchestrator::{Inbound, InboundOutcome, LockMode, SagaStore};
use crate::saga::{Definition, Event, EventBody};
use crate::store::watermarks::Watermark;
use crate::store::{Db, StoreError, timers, watermarks};
use crate::telemetry::metrics::Metrics;

/// Result of a sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SweepReport {
    /// Timers that fired (their transition committed).
    pub fired: u32,
    /// Due timers skipped: disarmed meanwhile, or held by another sweeper.
    pub skipped: u32,
    /// Due timers held back: a partition that could still answer them has not
    /// been consumed past their due time.
    pub deferred: u32,
    /// Of the fired, how many waited the whole `ORDER_SAGA_TIMER_MAX_DEFER`.
    pub fired_past_bound: u32,
    /// The largest lag behind a deferred timer's due time (plus the allowed
    /// lateness) of the partition holding it, in seconds; 0 when none waits.
    pub max_watermark_lag_seconds: f64,
}

/// How timers are judged (`ORDER_SAGA_TIMER_*`).
#[derive(Debug, Clone)]
pub struct TimerPolicy {
    /// Judge by event time (the watermarks); `false`: fire at the due time.
    pub event_time: bool,
    pub allowed_lateness: Duration,
    pub max_defer: Duration,
    /// The topic each reply is consumed from.
    pub topics: BTreeMap<MessageKind, String>,
}

impl TimerPolicy {
    /// Fires at the due time, whatever has been consumed (for tools that run
    /// without a consumer).
    pub fn processing_time() -> TimerPolicy {
        TimerPolicy {
            event_time: false,
            allowed_lateness: Duration::ZERO,
            max_defer: Duration::ZERO,
            topics: BTreeMap::new(),
        }
    }
}

/// What to do with one due timer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fire,
    /// Fire: it waited `max_defer` for a partition that still lags.
    FirePastBound {
        topic: String,
        partition: i32,
    },
    /// Wait: `topic`/`partition` is consumed only through `through`, short of
    /// the due time plus lateness by `lag`.
    Defer {
        topic: String,
        partition: i32,
        lag: Duration,
    },
}

/// The topics whose events could still move a saga out of `state`: the
/// replies `state` handles (not those it ignores; timers and manual events
/// are not consumed from Kafka).
pub fn topics_that_could_answer<'a>(
    def: &Definition,
    state: &str,
    topics: &'a BTreeMap<MessageKind, String>,
) -> BTreeSet<&'a str> {
    let Some(st) = def.state(state) else {
        return BTreeSet::new();
    };
    st.on
        .keys()
        .filter_map(|e| e.parse::<MessageKind>().ok())
        .filter(|k| k.role() == Role::Reply)
        .filter_map(|k| topics.get(&k).map(String::as_str))
        .collect()
}

/// Judges one due timer (pure). `answering`: the topics that could still move
/// its saga; `marks`: every partition's watermark; `now`: the database clock.
/// A topic none of whose partitions has a watermark row is not consumed by
/// any replica of this deployment and holds nothing.
pub fn judge(
    policy: &TimerPolicy,
    due_at: DateTime<Utc>,
    answering: &BTreeSet<&str>,
    marks: &[Watermark],
    now: DateTime<Utc>,
) -> Verdict {
    if !policy.event_time {
        return Verdict::Fire;
    }
    let lateness = chrono::Duration::from_std(policy.allowed_lateness).unwrap_or(chrono::Duration::MAX);
    let needed = due_at.checked_add_signed(lateness).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let slowest = marks
        .iter()
        .filter(|w| answering.contains(w.topic.as_str()) && w.consumed_through < needed)
        .min_by_key(|w| w.consumed_through);
    let Some(w) = slowest else {
        return Verdict::Fire;
    };
    let waited = (now - due_at).to_std().unwrap_or(Duration::ZERO);
    if waited >= policy.max_defer {
        return Verdict::FirePastBound { topic: w.topic.clone(), partition: w.partition };
    }
    // A partition no replica has reported yet has no position to be behind:
    // say how long the timer has been waiting instead.
    let behind = if w.next_offset == 0 && w.consumed_through.timestamp() <= 0 {
        now.checked_add_signed(lateness).unwrap_or(now) - due_at
    } else {
        needed - w.consumed_through
    };
    let lag = behind.to_std().unwrap_or(Duration::ZERO);
    Verdict::Defer { topic: w.topic.clone(), partition: w.partition, lag }
}

/// The inbox id of a timer firing: one arming fires at most once.
pub fn firing_id(order_id: OrderId, name: &str, armed_version: SagaVersion) -> String {
    format!("timer:{order_id}:{name}:{armed_version}")
}

/// How many due timers one sweep looks at, at most: a backlog of deferred
/// timers is not re-read in full every second.
const SCAN_BATCHES: u32 = 10;

/// Fires every timer that is due now and whose answers have all been
/// consumed, in batches of `batch`.
pub async fn sweep(
    db: &Db,
    sagas: &SagaStore,
    batch: u32,
    policy: &TimerPolicy,
    metrics: Option<&Metrics>,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let versions: Vec<u32> = sagas.catalog.versions().map(|d| d.version).collect();
    let (now, marks) =
        if policy.event_time { watermarks::read(&db.pool).await? } else { (crate::store::now(), Vec::new()) };
    let mut after: Option<timers::DueTimer> = None;
    for _ in 0..SCAN_BATCHES {
        let due = timers::due(&db.pool, &versions, after.as_ref(), batch);
        let due = crate::store::deadline("finding due timers", due).await?;
        let Some(last) = due.last().cloned() else {
            break;
        };
        let mut fire = Vec::with_capacity(due.len());
        for t in &due {
            let answering = sagas
                .catalog
                .get(t.definition_version)
                .map(|d| topics_that_could_answer(d, &t.state, &policy.topics))
                .unwrap_or_default();
            match judge(policy, t.due_at, &answering, &marks, now) {
                Verdict::Fire => fire.push(t),
                Verdict::FirePastBound { topic, partition } => {
                    tracing::warn!(order_id = t.order_id.get(), timer = %t.name, %topic, partition,
                        "timer fired at the deferral bound although the partition was not consumed past its due time");
                    report.fired_past_bound += 1;
                    fire.push(t);
                }
                Verdict::Defer { lag, .. } => {
                    report.deferred += 1;
                    report.max_watermark_lag_seconds = report.max_watermark_lag_seconds.max(lag.as_secs_f64());
                }
            }
        }
        if !fire.is_empty() {
            let (fired, skipped) = fire_batch(db, sagas, &fire, metrics).await?;
            report.fired += fired;
            report.skipped += skipped;
        }
        if (due.len() as u32) < batch {
            break;
        }
        after = Some(last);
    }
    if let Some(m) = metrics {
        m.sagas.saga_timers_deferred.set(i64::from(report.deferred));
        m.sagas.saga_timer_watermark_lag_seconds.set(report.max_watermark_lag_seconds);
        m.sagas.saga_timers_fired_past_bound_total.inc_by(u64::from(report.fired_past_bound));
    }
    if report.deferred > 0 {
        tracing::debug!(
            deferred = report.deferred,
            lag_s = report.max_watermark_lag_seconds,
            "due timers wait for the consumer to pass their due time"
        );
    }
    Ok(report)
}

/// Fires `due` in one transaction: (fired, skipped).
async fn fire_batch(
    db: &Db,
    sagas: &SagaStore,
    due: &[&timers::DueTimer],
    metrics: Option<&Metrics>,
) -> Result<(u32, u32), StoreError> {
    let inbound: Vec<Inbound> = due
        .iter()
        .map(|t| {
            let id = firing_id(t.order_id, &t.name, t.armed_version);
            Inbound {
                event_id: id.clone(),
                order_id: Some(t.order_id),
                event_name: format!("{}{}", crate::saga::definition::TIMER_PREFIX, t.name),
                event: Ok(Event { id, order_id: t.order_id, body: EventBody::Timer { name: t.name.clone() } }),
                source: crate::orchestrator::Source::Timer,
                trace: Some(crate::telemetry::trace_context::TraceContext::new_root()),
                raw: None,
            }
        })
        .collect();
    let result = sagas.apply_batch(db, &inbound, LockMode::SkipLocked).await?;
    // Fired and committed, not yet reported: a crash here must not fire twice.
    crate::failpoint::hit("sweeper.after_fire");
    let fired = result
        .outcomes
        .iter()
        .filter(|o| matches!(o, InboundOutcome::Applied { .. } | InboundOutcome::Ignored))
        .count() as u32;
    if let Some(m) = metrics {
        m.sagas.saga_timers_fired_total.inc_by(u64::from(fired));
        crate::orchestrator::record_batch(m, &result);
    }
    if fired > 0 {
        tracing::info!(fired, "timers fired");
    }
    Ok((fired, result.outcomes.len() as u32 - fired))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single().expect("a time")
    }

    fn mark(topic: &str, partition: i32, through: i64) -> Watermark {
        Watermark { topic: topic.into(), partition, consumed_through: t(through), next_offset: 0, updated_at: t(0) }
    }

    fn policy() -> TimerPolicy {
        TimerPolicy {
            event_time: true,
            allowed_lateness: Duration::from_secs(2),
            max_defer: Duration::from_secs(3600),
            topics: BTreeMap::new(),
        }
    }

    fn answering() -> BTreeSet<&'static str> {
        BTreeSet::from(["pay.ok", "pay.failed"])
    }

    #[test]
    fn a_timer_waits_until_every_answering_partition_is_consumed_past_its_due_time() {
        let due = t(100);
        let marks =
            vec![mark("pay.ok", 0, 200), mark("pay.ok", 1, 101), mark("pay.failed", 0, 300), mark("other", 0, 0)];
        // pay.ok/1 is consumed through 101 < 100 + 2 s lateness: wait, and say who holds it.
        assert_eq!(
            judge(&policy(), due, &answering(), &marks, t(150)),
            Verdict::Defer { topic: "pay.ok".into(), partition: 1, lag: Duration::from_secs(1) }
        );
        let marks =
            vec![mark("pay.ok", 0, 200), mark("pay.ok", 1, 102), mark("pay.failed", 0, 300), mark("other", 0, 0)];
        assert_eq!(
            judge(&policy(), due, &answering(), &marks, t(150)),
            Verdict::Fire,
            "a topic that cannot answer holds nothing"
        );
    }

    #[test]
    fn a_timer_fires_at_the_bound_however_far_behind_a_partition_is() {
        let marks = vec![mark("pay.ok", 0, 0)];
        let p = policy();
        assert!(matches!(judge(&p, t(100), &answering(), &marks, t(100 + 3599)), Verdict::Defer { .. }));
        assert_eq!(
            judge(&p, t(100), &answering(), &marks, t(100 + 3600)),
            Verdict::FirePastBound { topic: "pay.ok".into(), partition: 0 }
        );
    }

    #[test]
    fn processing_time_and_unconsumed_topics_fire_at_the_due_time() {
        let marks = vec![mark("pay.ok", 0, 0)];
        assert_eq!(judge(&TimerPolicy::processing_time(), t(100), &answering(), &marks, t(100)), Verdict::Fire);
        assert_eq!(judge(&policy(), t(100), &answering(), &[], t(100)), Verdict::Fire, "no watermark rows at all");
        assert_eq!(judge(&policy(), t(100), &BTreeSet::new(), &marks, t(100)), Verdict::Fire, "nothing could answer");
    }

    #[test]
    fn the_answering_topics_are_the_replies_the_state_handles() {
        let def =
            crate::saga::parse::parse(std::path::Path::new("sagas/order.toml"), include_str!("../sagas/order.toml"))
                .unwrap_or_else(|e| panic!("{e}"));
        let topics: BTreeMap<MessageKind, String> =
            MessageKind::all_where(|r| r == Role::Reply).map(|k| (k, format!("t.{}", k.name()))).collect();
        assert_eq!(
            topics_that_could_answer(&def, "AWAITING_PAYMENT", &topics),
            BTreeSet::from(["t.payment.authorized.v1", "t.payment.failed.v1"]),
            "inventory replies are ignored there: they cannot move it"
        );
        assert!(topics_that_could_answer(&def, "NO_SUCH_STATE", &topics).is_empty());
    }
}
