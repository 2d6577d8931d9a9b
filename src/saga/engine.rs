//! The pure saga engine: `(definition, instance, event, now) -> (instance', effects)`.
//!
//! No I/O, no clock, no randomness: ids are derived from the order id, the
//! step, the action and counters stored in the instance, so feeding the same
//! events to the same instance always yields the same effects — the property
//! that lets the shell retry a transaction, and a participant de-duplicate.

// Message kinds are matched exhaustively here: a new kind must be handled,
// never swallowed by a `_` arm (ARCHITECTURE.md, "Adding a participant message").
#![warn(clippy::wildcard_enum_match_arm)]

use chrono::{DateTime, Utc};

use super::definition::{Compensate, Correlation, Definition, Fact, TransitionDef};
use super::model::{
    Effect, Event, EventBody, Instance, InstanceData, OrderFacts, Outcome, Rejection, StepProgress, Transition,
};
use crate::contracts::{
    Message, MessageKind, OrderAttentionRequired, OrderItemBackordered, Role, SkuQty, TimestampMicros, event_id,
};
use crate::domain::{OrderId, SagaVersion};

/// Deterministic command id: `{order_id}:{step}:{action}:{n}`. Participants
/// de-duplicate on it; do not change the format.
pub fn command_id(order_id: OrderId, step: &str, action: &str, n: u32) -> String {
    format!("{order_id}:{step}:{action}:{n}")
}

/// Payment intent id of the `run`-th authorization of an order.
pub fn payment_intent_id(order_id: OrderId, run: u32) -> String {
    format!("pi-{order_id}-{run}")
}

/// Creates the instance for a new order and returns the start transition's effects.
pub fn start(
    def: &Definition,
    order_id: OrderId,
    order: OrderFacts,
    now: DateTime<Utc>,
) -> Result<(Instance, Vec<Effect>), Rejection> {
    let inst = Instance {
        order_id,
        saga_name: def.name.clone(),
        definition_version: def.version,
        state: def.start.to.clone(),
        version: SagaVersion(0), // the start transition makes it 1
        state_entered_at: now,
        data: InstanceData { order, steps: Default::default(), emitted: Default::default(), seq: 0 },
    };
    let event = Event {
        id: format!("{order_id}:start"),
        order_id,
        body: EventBody::Manual {
            name: def.start.event.clone(),
            actor: "api".into(),
            reason_code: None,
            comment: None,
        },
    };
    let t = apply(def, &inst, &def.start, &event, now)?;
    Ok((t.instance, t.effects))
}

/// Feeds one event to an instance.
pub fn transition(
    def: &Definition,
    inst: &Instance,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<Transition, Rejection> {
    if inst.definition_version != def.version {
        return Err(Rejection::WrongDefinition { instance: inst.definition_version, definition: def.version });
    }
    if event.order_id != inst.order_id {
        return Err(Rejection::WrongOrder { event_order: event.order_id, saga_order: inst.order_id });
    }
    let state = def
        .state(&inst.state)
        .ok_or_else(|| Rejection::UnknownState { state: inst.state.clone(), version: def.version })?;
    let name = event.name();
    if let Some(t) = state.on.get(&name) {
        // A reply moves the saga only when it answers the command its step
        // waits for; anything else is recorded as stale and changes nothing.
        if let EventBody::Message(m) = &event.body
            && let Some(stale) = uncorrelated(def, inst, m)
        {
            return Ok(Transition { instance: inst.clone(), effects: Vec::new(), outcome: stale });
        }
        let chosen = match (&t.otherwise, &event.body) {
            (Some(otherwise), EventBody::Message(m)) if !guard_holds(&t.require, &inst.data.order, m) => otherwise,
            _ => t,
        };
        return apply(def, inst, chosen, event, now);
    }
    if state.ignore.contains(&name) {
        return Ok(Transition { instance: inst.clone(), effects: Vec::new(), outcome: Outcome::Ignored });
    }
    Err(Rejection::NotAccepted { state: inst.state.clone(), event: name })
}

/// `Some(Outcome::Stale)` when `reply` answers a step of `def` but not the
/// command that step is waiting for (its latest): an older command, a command
/// never sent, or no key while the step has run more than once.
fn uncorrelated(def: &Definition, inst: &Instance, reply: &Message) -> Option<Outcome> {
    let (step, correlation) = def.step_answered_by(reply.kind())?;
    let runs = inst.data.steps.get(&step.name).map_or(0, |p| p.runs);
    let expected = match correlation {
        Correlation::CommandId => {
            let action = action_of(step.command).ok()?;
            let n = inst.data.emitted.get(&format!("{}:{action}", step.name)).copied().unwrap_or(0);
            (n > 0).then(|| command_id(inst.order_id, &step.name, action, n))
        }
        Correlation::PaymentIntentId => (runs > 0).then(|| payment_intent_id(inst.order_id, runs)),
    };
    let got = reply_field(reply, correlation.field());
    let matches = match (&expected, &got) {
        (Some(e), Some(g)) => e == g,
        // Only `command_id` is optional on the wire: without it, the reply can
        // only be attributed while there is one command it could answer.
        (Some(_), None) => runs == 1,
        (None, _) => false,
    };
    (!matches).then(|| Outcome::Stale {
        field: correlation.field(),
        expected: expected.unwrap_or_else(|| format!("none (step {} has not run)", step.name)),
        got,
    })
}

/// A reply's field as text (`None` when absent or null).
fn reply_field(reply: &Message, field: &str) -> Option<String> {
    let json = reply.to_json().ok()?;
    let v = json.get(field)?;
    if let Some(s) = v.as_str() {
        Some(s.to_owned())
    } else if v.is_null() {
        None
    } else {
        Some(v.to_string())
    }
}

/// Whether every `require`d field of `reply` equals the saga's fact: amounts
/// as decimals (`22.5` = `22.50`), everything else exactly.
pub fn guard_holds(require: &[(String, Fact)], facts: &OrderFacts, reply: &Message) -> bool {
    require.iter().all(|(field, fact)| {
        let Some(got) = reply_field(reply, field) else {
            return false;
        };
        match fact {
            Fact::TotalAmount => facts.total.is_written_as(&got),
            Fact::Currency => got == facts.total.currency().code(),
            Fact::TenantRegion => got == facts.tenant_region,
            Fact::CustomerId => got == facts.customer_id,
        }
    })
}

/// Re-sends the command of the state's current step with the *same* command id
/// (an operator's "retry the current step"). The instance does not change, so
/// participants that saw the first copy drop this one.
pub fn retry_current_step(
    def: &Definition,
    inst: &Instance,
    now: DateTime<Utc>,
    retry_no: u32,
) -> Result<Message, Rejection> {
    let state = def
        .state(&inst.state)
        .ok_or_else(|| Rejection::UnknownState { state: inst.state.clone(), version: def.version })?;
    let step_name = state.step.clone().ok_or_else(|| Rejection::NoCurrentStep { state: inst.state.clone() })?;
    let step = &def.steps[&step_name];
    let runs = inst.data.steps.get(&step_name).map(|p| p.runs).unwrap_or(0);
    if runs == 0 {
        return Err(Rejection::StepNotRun { step: step_name });
    }
    // Only while the state still accepts one of the step's replies is an
    // answer outstanding (a step that declares no replies cannot be judged).
    if !step.replies.is_empty() && !step.replies.iter().any(|k| state.on.contains_key(k.name())) {
        return Err(Rejection::StepNotAwaited { state: inst.state.clone(), step: step_name });
    }
    let action = action_of(step.command)?;
    let cmd_id = command_id(
        inst.order_id,
        &step_name,
        action,
        inst.data.emitted.get(&format!("{step_name}:{action}")).copied().unwrap_or(runs),
    );
    // A new event id (the outbox and consumers key on it), the same command id.
    let ev_id = event_id(&format!("{cmd_id}:retry:{retry_no}"));
    build_command(step.command, inst, &step_name, &cmd_id, ev_id, now, None)
}

/// The action verb of a command kind (`reserve`, `void`, …), from the vocabulary.
fn action_of(kind: MessageKind) -> Result<&'static str, Rejection> {
    kind.command().map(|c| c.action).ok_or(Rejection::NotACommand { kind: kind.name() })
}

fn apply(
    def: &Definition,
    inst: &Instance,
    t: &TransitionDef,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<Transition, Rejection> {
    let mut next = inst.clone();
    next.version = next.version.next();
    let mut effects = Vec::new();
    let order_id = inst.order_id;
    let reason = match &event.body {
        EventBody::Manual { reason_code: Some(r), .. } => Some(r.clone()),
        EventBody::Message(_) | EventBody::Timer { .. } | EventBody::Manual { .. } => t.reason.clone(),
    };
    let comment = match &event.body {
        EventBody::Manual { comment, .. } => comment.clone(),
        EventBody::Message(_) | EventBody::Timer { .. } => None,
    };

    // The order status first: if the shell refuses it, nothing else matters.
    if let Some(to) = t.order_status {
        effects.push(Effect::SetOrderStatus { to, reason_code: reason.clone(), comment });
    }
    for name in &t.disarm {
        effects.push(Effect::CancelTimer { name: name.clone() });
    }

    // Compensations, newest step first for "all".
    let to_compensate: Vec<String> = match &t.compensate {
        Compensate::None => Vec::new(),
        Compensate::Steps(s) => s.clone(),
        Compensate::All => {
            let mut active: Vec<(&String, &StepProgress)> = next.data.steps.iter().filter(|(_, p)| p.active).collect();
            active.sort_by_key(|(_, p)| std::cmp::Reverse(p.run_seq));
            active.into_iter().map(|(n, _)| n.clone()).collect()
        }
    };
    let compensation_reason = reason.clone().unwrap_or_else(|| "COMPENSATION".into());
    for step_name in to_compensate {
        let Some(step) = def.steps.get(&step_name) else {
            continue;
        };
        let action = action_of(step.compensation)?;
        let n = bump(&mut next.data, &step_name, action);
        let cmd_id = command_id(order_id, &step_name, action, n);
        let ev_id = event_id(&cmd_id);
        effects.push(Effect::Publish(build_command(
            step.compensation,
            &next,
            &step_name,
            &cmd_id,
            ev_id,
            now,
            Some(&compensation_reason),
        )?));
        next.data.steps.entry(step_name).or_default().active = false;
    }

    // Run a step.
    if let Some(step_name) = &t.run {
        let step = &def.steps[step_name];
        next.data.seq += 1;
        let seq = next.data.seq;
        let progress = next.data.steps.entry(step_name.clone()).or_default();
        progress.runs += 1;
        progress.active = true;
        progress.run_seq = seq;
        let action = action_of(step.command)?;
        let n = bump(&mut next.data, step_name, action);
        let cmd_id = command_id(order_id, step_name, action, n);
        let ev_id = event_id(&cmd_id);
        effects.push(Effect::Publish(build_command(step.command, &next, step_name, &cmd_id, ev_id, now, None)?));
    }

    for name in &t.arm {
        if let Some(d) = def.timers.get(name) {
            // Durations are bounded at load time (MAX_TIMER); saturate rather than overflow.
            let due_at = chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            effects.push(Effect::ArmTimer { name: name.clone(), due_at });
        }
    }

    // Events, with ids unique per (saga version, position).
    let facts = &next.data.order;
    let occurred_at = TimestampMicros::from_datetime(now);
    let mut idx = 0;
    let mut next_event_id = |kind: MessageKind| {
        idx += 1;
        event_id(&format!("{order_id}:{}:{idx}:{}", next.version, kind.name()))
    };
    for kind in &t.emit {
        match kind {
            MessageKind::OrderItemBackordered => {
                if let EventBody::Message(Message::InventoryReservationFailed(f)) = &event.body {
                    for s in &f.shortages {
                        effects.push(Effect::Publish(Message::from(OrderItemBackordered {
                            event_id: next_event_id(*kind),
                            order_id: order_id.wire(),
                            occurred_at,
                            tenant_region: facts.tenant_region.clone(),
                            sku: s.sku.clone(),
                            requested_qty: s.requested_qty,
                            available_qty: s.available_qty,
                        })));
                    }
                }
            }
            MessageKind::OrderAttentionRequired => {
                effects.push(Effect::Publish(Message::from(OrderAttentionRequired {
                    event_id: next_event_id(*kind),
                    order_id: order_id.wire(),
                    occurred_at,
                    tenant_region: facts.tenant_region.clone(),
                    reason_code: t.alert.clone().or_else(|| reason.clone()).unwrap_or_else(|| "ATTENTION".into()),
                    saga_state: t.to.clone(),
                    message: attention_message(event),
                })));
            }
            // The definition validator lets only `Emit::Any`/`Emit::On` events through.
            MessageKind::OrderCreated
            | MessageKind::OrderStatusChanged
            | MessageKind::InventoryReserve
            | MessageKind::InventoryRelease
            | MessageKind::PaymentAuthorize
            | MessageKind::PaymentVoid
            | MessageKind::InventoryReserved
            | MessageKind::InventoryReservationFailed
            | MessageKind::PaymentAuthorized
            | MessageKind::PaymentFailed => return Err(Rejection::NotEmittable { kind: kind.name() }),
        }
    }
    if let Some(code) = &t.alert {
        effects.push(Effect::Alert { code: code.clone(), message: attention_message(event) });
    }

    let from = inst.state.clone();
    if t.to != inst.state {
        next.state = t.to.clone();
        next.state_entered_at = now;
    }
    Ok(Transition { outcome: Outcome::Applied { from, to: t.to.clone(), reason }, instance: next, effects })
}

fn attention_message(event: &Event) -> String {
    match &event.body {
        EventBody::Message(Message::InventoryReservationFailed(f)) => {
            let skus: Vec<String> =
                f.shortages.iter().map(|s| format!("{} ({} of {})", s.sku, s.available_qty, s.requested_qty)).collect();
            format!(
                "inventory reservation failed ({}): short of stock: {}",
                f.reason,
                if skus.is_empty() { "-".into() } else { skus.join(", ") }
            )
        }
        EventBody::Message(_) | EventBody::Timer { .. } | EventBody::Manual { .. } => {
            format!("{} needs attention", event.name())
        }
    }
}

fn bump(data: &mut InstanceData, step: &str, action: &str) -> u32 {
    let n = data.emitted.entry(format!("{step}:{action}")).or_insert(0);
    *n += 1;
    *n
}

/// Everything a command may carry, named as in the Avro schemas. Each
/// command kind reads the fields it declares and ignores the rest, so a new
/// command needs no code here as long as its fields are saga facts (the test
/// `saga::tests::every_command_builds_from_saga_facts` checks that for every
/// command and compensation of the vocabulary).
#[derive(serde::Serialize)]
pub(crate) struct CommandFacts<'a> {
    pub event_id: String,
    pub order_id: OrderId,
    pub occurred_at: TimestampMicros,
    pub tenant_region: &'a str,
    pub command_id: &'a str,
    pub items: Vec<SkuQty>,
    /// Stable per run of the step, so a void names the authorization it undoes.
    pub payment_intent_id: String,
    pub customer_id: &'a str,
    pub amount: String,
    pub currency: &'a str,
    pub reason_code: &'a str,
}

impl CommandFacts<'_> {
    /// Builds a message of `kind` from these facts.
    pub(crate) fn build(&self, kind: MessageKind) -> Result<Message, Rejection> {
        let unbuildable = |reason: String| Rejection::CommandUnbuildable { kind: kind.name(), reason };
        let json = serde_json::to_value(self).map_err(|e| unbuildable(e.to_string()))?;
        Message::from_json(kind, &json).map_err(|e| unbuildable(e.to_string()))
    }
}

fn build_command(
    kind: MessageKind,
    inst: &Instance,
    step: &str,
    cmd_id: &str,
    ev_id: String,
    now: DateTime<Utc>,
    reason: Option<&str>,
) -> Result<Message, Rejection> {
    match kind.role() {
        Role::Command(_) | Role::Compensation(_) => {}
        Role::Event { .. } | Role::Reply => return Err(Rejection::NotACommand { kind: kind.name() }),
    }
    let f = &inst.data.order;
    let runs = inst.data.steps.get(step).map(|p| p.runs).unwrap_or(1).max(1);
    CommandFacts {
        event_id: ev_id,
        order_id: inst.order_id,
        occurred_at: TimestampMicros::from_datetime(now),
        tenant_region: &f.tenant_region,
        command_id: cmd_id,
        items: f.items.iter().map(|i| SkuQty { sku: i.sku.clone(), qty: i.qty as i32 }).collect(),
        payment_intent_id: payment_intent_id(inst.order_id, runs),
        customer_id: &f.customer_id,
        amount: f.total.to_string(),
        currency: f.total.currency().code(),
        reason_code: reason.unwrap_or("COMPENSATION"),
    }
    .build(kind)
}
