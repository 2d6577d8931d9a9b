//! The sagas that need a human, most urgent first, each with why in words:
//! the console's overview leads with them.
//!
//! Who needs a human (in this order): a quarantined saga (its events are
//! parked until an operator releases or skips them); a saga in a state that
//! only an operator moves on (`Definition::awaits_operator`, e.g.
//! PENDING_REVIEW); a saga whose timer is overdue; a saga waiting for a reply
//! to its step's command longer than its state's `max_dwell` (a participant
//! that does not answer); any other saga over its `max_dwell`. The lists are
//! the saga list's own filters; [`why`] is a pure function of what they
//! return.

use serde::Serialize;
use sqlx::Row;

use super::{SagaFilter, SagaSummary, list};
use crate::domain::OrderId;
use crate::saga::Catalog;
use crate::store::{Ctx, Db, StoreError};

/// Why a saga needs a human, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    Quarantined,
    AwaitingOperator,
    TimerOverdue,
    NoReply,
    Stuck,
}

/// One saga that needs a human.
#[derive(Debug, Clone, Serialize)]
pub struct Attention {
    pub need: Need,
    /// Why, in words.
    pub why: String,
    #[serde(flatten)]
    pub saga: SagaSummary,
}

/// The first sagas of each kind, merged (each saga once, for its most
/// urgent reason), most urgent first, then longest in its state.
#[derive(Debug, Clone, Serialize)]
pub struct AttentionList {
    pub items: Vec<Attention>,
    /// How many sagas of each kind were found (each kind's list is bounded by
    /// `limit`; the overview's cards give full counts).
    pub found: std::collections::BTreeMap<String, usize>,
}

/// `90 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn age_in_words(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Why `saga` needs a human for `need`, in words (pure).
pub fn why(
    need: Need,
    saga: &SagaSummary,
    description: Option<&str>,
    step: Option<&str>,
    overdue: Option<&(String, i64)>,
) -> String {
    let age = age_in_words(saga.age_in_state_seconds);
    let expected = saga.max_dwell_seconds.map(|m| age_in_words(i64::try_from(m).unwrap_or(i64::MAX)));
    match need {
        Need::Quarantined => format!(
            "Quarantined: {}. Its events are parked until it is released or the poison event skipped.",
            saga.quarantined.as_deref().unwrap_or("no reason recorded")
        ),
        Need::AwaitingOperator => format!(
            "Waiting for an operator for {age} in {}{}",
            saga.state,
            description.map(|d| format!(": {d}")).unwrap_or_else(|| ".".into())
        ),
        Need::TimerOverdue => match overdue {
            Some((name, late)) => format!(
                "Timer {name} is overdue by {}: it fires as soon as the sweeper and event time allow.",
                age_in_words(*late)
            ),
            None => "A timer is overdue.".into(),
        },
        Need::NoReply => format!(
            "No reply to its {} command for {age} (expected within {}): is the participant answering?",
            step.unwrap_or("step's"),
            expected.unwrap_or_else(|| "its max dwell".into())
        ),
        Need::Stuck => format!(
            "In {} for {age}, longer than expected ({}).",
            saga.state,
            expected.unwrap_or_else(|| "its max dwell".into())
        ),
    }
}

/// Why one saga needs a human, if it does (pure): the most urgent reason.
/// `overdue` is its most overdue timer past the grace period.
pub fn need_of(saga: &SagaSummary, catalog: &Catalog, overdue: Option<&(String, i64)>) -> Option<Need> {
    if saga.terminal {
        return None;
    }
    let def = catalog.get(saga.definition_version);
    if saga.quarantined.is_some() {
        Some(Need::Quarantined)
    } else if def.is_some_and(|d| d.awaits_operator(&saga.state)) {
        Some(Need::AwaitingOperator)
    } else if overdue.is_some() {
        Some(Need::TimerOverdue)
    } else if saga.stuck {
        Some(if step_of(catalog, saga).is_some() { Need::NoReply } else { Need::Stuck })
    } else {
        None
    }
}

/// Why this saga is where it is, for its page: the need and why in words,
/// or `None` when it needs no one.
pub async fn why_here(db: &Db, catalog: &Catalog, saga: &SagaSummary) -> Result<Option<Attention>, StoreError> {
    let probe = [Attention { need: Need::TimerOverdue, why: String::new(), saga: saga.clone() }];
    let overdue = overdue_timers(db, &probe).await?;
    let late = overdue.first().map(|(_, t)| t).filter(|(_, secs)| *secs > i64::from(super::OVERDUE_GRACE_SECONDS));
    let Some(need) = need_of(saga, catalog, late) else { return Ok(None) };
    let def = catalog.get(saga.definition_version);
    let description = def.and_then(|d| d.state(&saga.state)).and_then(|s| s.description.as_deref());
    let step = step_of(catalog, saga);
    let why = why(need, saga, description, step.as_deref(), late);
    Ok(Some(Attention { need, why, saga: saga.clone() }))
}

/// The sagas that need a human, at most `limit` of each kind.
pub async fn attention(db: &Db, catalog: &Catalog, limit: u32) -> Result<AttentionList, StoreError> {
    let mut found = std::collections::BTreeMap::new();
    let mut items: Vec<Attention> = Vec::new();
    let mut add = |need: Need, sagas: Vec<SagaSummary>, items: &mut Vec<Attention>| {
        let label = serde_json::to_value(need).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        *found.entry(label).or_insert(0) += sagas.len();
        for saga in sagas {
            match items.iter_mut().find(|a| a.saga.order_id == saga.order_id) {
                Some(a) if a.need <= need => {}
                Some(a) => a.need = need,
                None => items.push(Attention { need, why: String::new(), saga }),
            }
        }
    };
    let quarantined = SagaFilter { quarantined: Some(true), ..SagaFilter::default() };
    add(Need::Quarantined, list(db, catalog, &quarantined, None, limit).await?.0, &mut items);
    let mut waiting_states: Vec<String> = catalog
        .versions()
        .flat_map(|d| d.states.keys().filter(|s| d.awaits_operator(s)).cloned().collect::<Vec<_>>())
        .collect();
    waiting_states.sort();
    waiting_states.dedup();
    for state in waiting_states {
        let f = SagaFilter { state: Some(state), ..SagaFilter::default() };
        let sagas = list(db, catalog, &f, None, limit).await?.0;
        // Only where the saga's own definition version waits for an operator.
        let sagas = sagas
            .into_iter()
            .filter(|s| catalog.get(s.definition_version).is_some_and(|d| d.awaits_operator(&s.state)));
        add(Need::AwaitingOperator, sagas.collect(), &mut items);
    }
    let overdue = SagaFilter { timers_overdue: true, ..SagaFilter::default() };
    add(Need::TimerOverdue, list(db, catalog, &overdue, None, limit).await?.0, &mut items);
    let stuck = SagaFilter { stuck: true, ..SagaFilter::default() };
    let (waiting_reply, other): (Vec<SagaSummary>, Vec<SagaSummary>) =
        list(db, catalog, &stuck, None, limit).await?.0.into_iter().partition(|s| step_of(catalog, s).is_some());
    add(Need::NoReply, waiting_reply, &mut items);
    add(Need::Stuck, other, &mut items);

    let overdue_timers = overdue_timers(db, &items).await?;
    for a in &mut items {
        let def = catalog.get(a.saga.definition_version);
        let description = def.and_then(|d| d.state(&a.saga.state)).and_then(|s| s.description.as_deref());
        let step = step_of(catalog, &a.saga);
        let late = overdue_timers.iter().find(|(id, _)| *id == a.saga.order_id).map(|(_, t)| t);
        a.why = why(a.need, &a.saga, description, step.as_deref(), late);
    }
    items.sort_by(|a, b| a.need.cmp(&b.need).then(b.saga.age_in_state_seconds.cmp(&a.saga.age_in_state_seconds)));
    Ok(AttentionList { items, found })
}

/// The command a saga waits to be answered: its state's step, when the
/// state accepts a reply of that step (not, e.g., PENDING_REVIEW).
fn step_of(catalog: &Catalog, s: &SagaSummary) -> Option<String> {
    let def = catalog.get(s.definition_version)?;
    let state = def.state(&s.state)?;
    let step = def.steps.get(state.step.as_deref()?)?;
    state.on.keys().any(|e| step.replies.iter().any(|k| k.name() == e)).then(|| step.name.clone())
}

/// The most overdue timer of each listed saga: `(order_id, (timer, seconds late))`.
async fn overdue_timers(db: &Db, items: &[Attention]) -> Result<Vec<(OrderId, (String, i64))>, StoreError> {
    let ids: Vec<OrderId> = items.iter().filter(|a| a.need == Need::TimerOverdue).map(|a| a.saga.order_id).collect();
    let mut out = Vec::new();
    for id in ids {
        let row = sqlx::query(
            "SELECT timer_name, TIMESTAMPDIFF(SECOND, due_at, NOW(6)) AS late FROM saga_timers \
             WHERE order_id = ? AND due_at < NOW(6) ORDER BY due_at LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .ctx("reading an overdue timer")?;
        if let Some(r) = row {
            out.push((id, (r.try_get("timer_name").ctx("decoding timer")?, r.try_get("late").ctx("decoding late")?)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn saga(state: &str, age: i64) -> SagaSummary {
        SagaSummary {
            order_id: crate::domain::ids::oid(7),
            state: state.into(),
            state_entered_at: Utc::now(),
            age_in_state_seconds: age,
            tenant_region: "eu-west".into(),
            definition_version: 1,
            version: crate::domain::SagaVersion(3),
            terminal: false,
            quarantined: None,
            max_dwell_seconds: Some(120),
            stuck: age > 120,
        }
    }

    #[test]
    fn each_need_says_why_in_words() {
        let s = saga("PENDING_REVIEW", 5400);
        assert_eq!(
            why(Need::AwaitingOperator, &s, Some("Out of stock; an operator retries or cancels."), None, None),
            "Waiting for an operator for 90 min in PENDING_REVIEW: Out of stock; an operator retries or cancels."
        );
        let s = saga("RESERVING_INVENTORY", 600);
        assert_eq!(
            why(Need::NoReply, &s, None, Some("reserve_inventory"), None),
            "No reply to its reserve_inventory command for 10 min (expected within 2 min): is the participant answering?"
        );
        let late = ("payment_timeout".to_owned(), 400);
        assert!(
            why(Need::TimerOverdue, &s, None, None, Some(&late))
                .starts_with("Timer payment_timeout is overdue by 6 min")
        );
        let mut q = saga("AWAITING_PAYMENT", 30);
        q.quarantined = Some("undecodable inventory.reserved.v1".into());
        assert!(why(Need::Quarantined, &q, None, None, None).contains("undecodable inventory.reserved.v1"));
        assert_eq!(
            why(Need::Stuck, &saga("X", 200), None, None, None),
            "In X for 3 min, longer than expected (2 min)."
        );
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age_in_words(59), "59 s");
        assert_eq!(age_in_words(600), "10 min");
        assert_eq!(age_in_words(3 * 3600 + 300), "3 h 5 min");
        assert_eq!(age_in_words(2 * 86_400 + 4 * 3600), "2 d 4 h");
        assert_eq!(age_in_words(-5), "0 s");
    }

    #[test]
    fn needs_are_ordered_by_urgency() {
        let mut v = vec![Need::Stuck, Need::NoReply, Need::Quarantined, Need::TimerOverdue, Need::AwaitingOperator];
        v.sort();
        assert_eq!(v, vec![Need::Quarantined, Need::AwaitingOperator, Need::TimerOverdue, Need::NoReply, Need::Stuck]);
    }
}
