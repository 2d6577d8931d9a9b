//! `retry_step`: re-send the current step's command with the same command id
//! (the participant's idempotency makes a second delivery harmless).

use super::{Plan, Refusal, Snapshot, Write};

pub(super) fn plan(snap: &Snapshot) -> Result<Plan, Refusal> {
    snap.not_quarantined()?;
    let msg = crate::saga::retry_current_step(&snap.def, &snap.saga, snap.now, snap.retries + 1)
        .map_err(|e| Refusal::NotAllowed(e.to_string()))?;
    Ok(Plan { writes: vec![Write::Outbox(msg)] })
}
