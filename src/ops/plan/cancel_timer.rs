//! `cancel_timer`: disarm an armed timer (allowed while quarantined: it moves
//! nothing, it only stops a timeout from firing).

use super::{Plan, Refusal, Snapshot, Write};

pub(super) fn plan(snap: &Snapshot, timer: &str) -> Result<Plan, Refusal> {
    snap.timer(timer)?;
    Ok(Plan { writes: vec![Write::DeleteTimer { timer: timer.to_owned() }] })
}
