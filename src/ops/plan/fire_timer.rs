//! `fire_timer`: fire an armed timer now, through the transition function,
//! as the sweeper would (the same event id: a concurrent sweep finds nothing).

use crate::saga::definition::TIMER_PREFIX;
use crate::saga::{Event, EventBody};

use super::{Expect, Plan, Refusal, Snapshot, Write, originated};

pub(super) fn plan(snap: &Snapshot, timer: &str) -> Result<Plan, Refusal> {
    snap.not_quarantined()?;
    let armed = snap.timer(timer)?;
    let order_id = snap.saga.order_id;
    let id = crate::timers::firing_id(order_id, timer, armed.armed_version);
    let event = Event { id, order_id, body: EventBody::Timer { name: timer.to_owned() } };
    Ok(Plan {
        writes: vec![
            // Due now, so that the shell takes it as the sweeper would.
            Write::TimerDue { timer: timer.to_owned(), due: snap.now - chrono::Duration::microseconds(1) },
            Write::Apply {
                events: vec![originated(snap, event, format!("{TIMER_PREFIX}{timer}"))],
                expect: Expect::AppliedOrIgnored,
            },
        ],
    })
}
