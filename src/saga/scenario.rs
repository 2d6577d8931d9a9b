//! A time-skipping test kit for saga definitions (`order-saga sagas test`):
//! scenario files feed a saga events — participant replies, manual events,
//! time passing (due timers fire in order) — and assert its state, the order
//! status, the messages it sends, its timers and alerts after each step. No
//! database, no broker, no clock: the engine is a pure function and time is
//! a number here, so a scenario of days runs in microseconds.
//!
//! ```toml
//! name = "the happy path confirms the order"
//! [order]
//! total_amount = "22.50"
//! currency = "EUR"
//!
//! [[steps]]                        # the start: order.created.v1
//! state = "RESERVING_INVENTORY"
//! sends = ["inventory.reserve.v1"]
//!
//! [[steps]]
//! reply = "inventory.reserved.v1"  # answers the latest command of its step
//! state = "AWAITING_PAYMENT"
//! timers = ["payment_timeout"]
//!
//! [[steps]]
//! advance = "15m"                  # due timers fire, in due order
//! state = "CANCELLED"
//! status = "CANCELLED"
//! ```
//!
//! A reply is built from the saga: the correlation field (`command_id`,
//! `payment_intent_id`) of the latest command of the step it answers, the
//! order's amount and currency, a reason; `fields` overrides any of them
//! (e.g. another amount, or an old `command_id` to check it is stale).

use chrono::{DateTime, TimeZone as _, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

use super::definition::Definition;
use super::engine;
use super::model::{Effect, Event, EventBody, Instance, Item, OrderFacts, Outcome};
use crate::contracts::{Message, MessageKind};
use crate::domain::{Currency, Money};

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Definition version to run (default: the newest).
    #[serde(default)]
    pub definition_version: Option<u32>,
    #[serde(default)]
    pub order: OrderSpec,
    pub steps: Vec<Step>,
}

/// The order the saga is for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderSpec {
    pub customer_id: String,
    pub tenant_region: String,
    pub currency: String,
    pub total_amount: String,
    pub items: Vec<ItemSpec>,
}

impl Default for OrderSpec {
    fn default() -> OrderSpec {
        OrderSpec {
            customer_id: "c-1".into(),
            tenant_region: "eu-west".into(),
            currency: "EUR".into(),
            total_amount: "10.00".into(),
            items: vec![ItemSpec { sku: "SKU-1".into(), qty: 1 }],
        }
    }
}

impl OrderSpec {
    /// Its total as money, or why `currency`/`total_amount` are not one.
    fn total(&self) -> Result<Money, String> {
        let currency = Currency::parse(&self.currency)
            .ok_or_else(|| format!("order.currency {:?} is not an ISO 4217 currency code", self.currency))?;
        let amount = self
            .total_amount
            .trim()
            .parse()
            .map_err(|_| format!("order.total_amount {:?} is not a decimal number", self.total_amount))?;
        Ok(Money::new(amount, currency))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    pub sku: String,
    pub qty: u32,
}

/// One step: what happens (nothing for the first step: the start), then
/// what must hold after it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A participant's reply, by message name.
    pub reply: Option<String>,
    /// Fields of the reply that differ from the ones built from the saga.
    #[serde(default)]
    pub fields: BTreeMap<String, toml::Value>,
    /// A manual event (an operator, a status request).
    pub manual: Option<String>,
    /// Time passes (`15m`, `2h`): every timer due by then fires, in order.
    pub advance: Option<String>,
    /// The saga's state after the step.
    pub state: Option<String>,
    /// `applied`, `ignored`, `stale` or `rejected` (the last event of the step).
    pub outcome: Option<String>,
    /// The order status the step set (the last one it set).
    pub status: Option<String>,
    /// Exactly the messages the step published, in order (commands and events).
    pub sends: Option<Vec<String>>,
    /// Exactly the timers armed after the step.
    pub timers: Option<Vec<String>>,
    /// Exactly the alerts the step raised.
    pub alerts: Option<Vec<String>>,
}

/// What running a scenario found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub name: String,
    /// Every expectation that did not hold, by step.
    pub failures: Vec<String>,
    /// `(state, event)` of every transition taken, for coverage.
    pub transitions: BTreeSet<(String, String)>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The saga as the kit sees it: the instance and what the shell would hold.
struct World {
    inst: Instance,
    now: DateTime<Utc>,
    timers: BTreeMap<String, DateTime<Utc>>,
    sent: Vec<Message>,
    seq: u32,
}

/// What one step did.
#[derive(Default)]
struct Did {
    sends: Vec<String>,
    status: Option<String>,
    alerts: Vec<String>,
    outcome: Option<String>,
}

impl World {
    fn absorb(&mut self, effects: Vec<Effect>, did: &mut Did) {
        for e in effects {
            match e {
                Effect::SetOrderStatus { to, .. } => did.status = Some(to.to_string()),
                Effect::Publish(m) => {
                    did.sends.push(m.kind().name().to_owned());
                    self.sent.push(m);
                }
                Effect::ArmTimer { name, due_at } => {
                    self.timers.insert(name, due_at);
                }
                Effect::CancelTimer { name } => {
                    self.timers.remove(&name);
                }
                Effect::Alert { code, .. } => did.alerts.push(code),
            }
        }
    }

    fn feed(&mut self, def: &Definition, body: EventBody, did: &mut Did, report: &mut Report) {
        self.seq += 1;
        let event = Event { id: format!("scenario-{}", self.seq), order_id: self.inst.order_id, body };
        let from = self.inst.state.clone();
        let name = event.name();
        match engine::transition(def, &self.inst, &event, self.now) {
            Ok(t) => {
                did.outcome = Some(
                    match t.outcome {
                        Outcome::Applied { .. } => "applied",
                        Outcome::Ignored => "ignored",
                        Outcome::Stale { .. } => "stale",
                    }
                    .to_owned(),
                );
                if matches!(t.outcome, Outcome::Applied { .. }) {
                    report.transitions.insert((from, name));
                }
                self.inst = t.instance;
                self.absorb(t.effects, did);
            }
            Err(_) => did.outcome = Some("rejected".into()),
        }
    }

    /// A reply of `kind` built from the saga, `fields` laid over it.
    fn reply(
        &self,
        def: &Definition,
        kind: MessageKind,
        fields: &BTreeMap<String, toml::Value>,
    ) -> Result<Message, String> {
        let facts = &self.inst.data.order;
        let mut v = json!({
            "event_id": format!("scenario-reply-{}", self.seq + 1),
            "order_id": self.inst.order_id,
            "occurred_at": self.now.timestamp_micros(),
            "tenant_region": facts.tenant_region,
            "amount": facts.total.to_string(),
            "currency": facts.total.currency().code(),
            "reason": "SCENARIO",
            "shortages": [],
            "command_id": Value::Null,
        });
        // The correlation of the latest command of the step this reply answers.
        if let Some((step, correlation)) = def.step_answered_by(kind) {
            let latest = self.sent.iter().rev().find(|m| m.kind() == step.command);
            if let Some(field) = latest.and_then(|m| m.to_json().ok()).and_then(|j| j.get(correlation.field()).cloned())
            {
                v[correlation.field()] = field;
            }
        }
        for (k, val) in fields {
            v[k] = serde_json::to_value(val).map_err(|e| e.to_string())?;
        }
        Message::from_json(kind, &v).map_err(|e| format!("cannot build {}: {e}", kind.name()))
    }
}

fn at_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

/// Runs a scenario against `def` (pure: the clock starts at 2026-01-01).
pub fn run(def: &Definition, s: &Scenario) -> Report {
    let mut report = Report { name: s.name.clone(), ..Report::default() };
    let total = match s.order.total() {
        Ok(t) => t,
        Err(e) => {
            report.failures.push(e);
            return report;
        }
    };
    let facts = OrderFacts {
        customer_id: s.order.customer_id.clone(),
        tenant_region: s.order.tenant_region.clone(),
        total,
        items: s.order.items.iter().map(|i| Item { sku: i.sku.clone(), qty: i.qty }).collect(),
    };
    let now = at_epoch();
    let (inst, effects) =
        match engine::start(def, crate::domain::OrderId::new(1).expect("1 is an order id"), facts, now) {
            Ok(x) => x,
            Err(e) => {
                report.failures.push(format!("the saga does not start: {e}"));
                return report;
            }
        };
    report.transitions.insert(("[*]".into(), def.start.event.clone()));
    let mut world = World { inst, now, timers: BTreeMap::new(), sent: Vec::new(), seq: 0 };
    for (i, step) in s.steps.iter().enumerate() {
        let mut did = Did { outcome: Some("applied".into()), ..Did::default() };
        let what = if i == 0 {
            world.absorb(effects.clone(), &mut did);
            "the start".to_owned()
        } else if let Some(r) = &step.reply {
            let Ok(kind) = r.parse::<MessageKind>() else {
                report.failures.push(format!("step {}: no message {r:?}", i + 1));
                return report;
            };
            match world.reply(def, kind, &step.fields) {
                Ok(m) => world.feed(def, EventBody::Message(m), &mut did, &mut report),
                Err(e) => {
                    report.failures.push(format!("step {}: {e}", i + 1));
                    return report;
                }
            }
            format!("reply {r}")
        } else if let Some(m) = &step.manual {
            let body =
                EventBody::Manual { name: m.clone(), actor: "scenario".into(), reason_code: None, comment: None };
            world.feed(def, body, &mut did, &mut report);
            format!("manual {m}")
        } else if let Some(text) = &step.advance {
            let Ok(d) = humantime::parse_duration(text) else {
                report.failures.push(format!("step {}: advance {text:?} is not a duration (e.g. 15m)", i + 1));
                return report;
            };
            world.now += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
            did.outcome = None;
            // Every timer due by now, earliest first; one may arm another.
            while let Some((name, _)) = world
                .timers
                .iter()
                .filter(|(_, due)| **due <= world.now)
                .min_by_key(|(_, due)| **due)
                .map(|(n, d)| (n.clone(), *d))
            {
                world.timers.remove(&name);
                world.feed(def, EventBody::Timer { name }, &mut did, &mut report);
            }
            format!("advance {}", humantime::format_duration(d))
        } else {
            report.failures.push(format!("step {}: say what happens: reply, manual or advance", i + 1));
            return report;
        };
        let mut fail = |m: String| report.failures.push(format!("step {} ({what}): {m}", i + 1));
        if let Some(want) = &step.state
            && *want != world.inst.state
        {
            fail(format!("state {}, expected {want}", world.inst.state));
        }
        if let Some(want) = &step.outcome
            && Some(want) != did.outcome.as_ref()
        {
            fail(format!("outcome {}, expected {want}", did.outcome.clone().unwrap_or_else(|| "none".into())));
        }
        if let Some(want) = &step.status
            && Some(want) != did.status.as_ref()
        {
            fail(format!("order status set: {}, expected {want}", did.status.clone().unwrap_or_else(|| "none".into())));
        }
        if let Some(want) = &step.sends
            && *want != did.sends
        {
            fail(format!("sent {:?}, expected {want:?}", did.sends));
        }
        let armed: Vec<String> = world.timers.keys().cloned().collect();
        if let Some(want) = &step.timers
            && *want != armed
        {
            fail(format!("timers {armed:?}, expected {want:?}"));
        }
        if let Some(want) = &step.alerts
            && *want != did.alerts
        {
            fail(format!("alerts {:?}, expected {want:?}", did.alerts));
        }
    }
    report
}

/// Parses a scenario file.
pub fn parse(text: &str) -> Result<Scenario, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// The transitions of `def` no report took: `(state, event)`.
pub fn uncovered(def: &Definition, reports: &[Report]) -> Vec<(String, String)> {
    let taken: BTreeSet<&(String, String)> = reports.iter().flat_map(|r| r.transitions.iter()).collect();
    let mut all = vec![("[*]".to_owned(), def.start.event.clone())];
    for (name, st) in &def.states {
        for event in st.on.keys() {
            all.push((name.clone(), event.clone()));
        }
    }
    all.into_iter().filter(|t| !taken.contains(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> Definition {
        super::super::parse::parse(std::path::Path::new("order.toml"), include_str!("../../sagas/order.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const HAPPY: &str = include_str!("../../sagas/tests/happy_path.toml");
    const TIMEOUT: &str = include_str!("../../sagas/tests/payment_timeout.toml");

    #[test]
    fn a_scenario_passes_and_a_wrong_expectation_is_reported_with_its_step() {
        let def = def();
        let ok = run(&def, &parse(HAPPY).unwrap_or_else(|e| panic!("{e}")));
        assert!(ok.passed(), "{:?}", ok.failures);
        let wrong = HAPPY.replacen("state = \"COMPLETED\"", "state = \"CANCELLED\"", 1);
        let r = run(&def, &parse(&wrong).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(r.failures, vec!["step 3 (reply payment.authorized.v1): state COMPLETED, expected CANCELLED"]);
    }

    #[test]
    fn time_skips_and_due_timers_fire_exactly_when_due() {
        let def = def();
        let r = run(&def, &parse(TIMEOUT).unwrap_or_else(|e| panic!("{e}")));
        assert!(r.passed(), "{:?}", r.failures);
        assert!(r.transitions.contains(&("AWAITING_PAYMENT".to_owned(), "timer.payment_timeout".to_owned())));
        // One second short of the 15 minutes: nothing fires.
        let early = TIMEOUT.replace("advance = \"1s\"", "advance = \"0s\"");
        let r = run(&def, &parse(&early).unwrap_or_else(|e| panic!("{e}")));
        assert!(
            r.failures.iter().any(|f| f.contains("state AWAITING_PAYMENT, expected CANCELLED")),
            "{:?}",
            r.failures
        );
    }

    #[test]
    fn bad_steps_and_unknown_fields_are_refused() {
        assert!(parse("name = \"x\"\nsteps = []\ncolour = 1").is_err(), "unknown fields are typos");
        let r = run(
            &def(),
            &parse("name = \"x\"\n[[steps]]\n[[steps]]\nreply = \"no.such.v1\"").unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(r.failures, vec!["step 2: no message \"no.such.v1\""]);
        let r =
            run(&def(), &parse("name = \"x\"\n[[steps]]\n[[steps]]\nstate = \"X\"").unwrap_or_else(|e| panic!("{e}")));
        assert!(r.failures[0].contains("say what happens"));
    }

    #[test]
    fn coverage_names_the_transitions_no_scenario_takes() {
        let def = def();
        let r = run(&def, &parse(HAPPY).unwrap_or_else(|e| panic!("{e}")));
        let left = uncovered(&def, &[r]);
        assert!(left.contains(&("AWAITING_PAYMENT".to_owned(), "timer.payment_timeout".to_owned())));
        assert!(!left.contains(&("RESERVING_INVENTORY".to_owned(), "inventory.reserved.v1".to_owned())));
    }
}
