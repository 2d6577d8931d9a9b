//! `migrate`: move the saga onto a newer loaded definition version, where
//! that version's `[migrate.from.<the saga's version>]` maps its state. The
//! decision is the pure `saga::migrate`; the plan carries it to the shell.

use crate::saga::migrate::{self, Armed};

use super::{Actor, Plan, Refusal, Snapshot, Write};

pub(super) fn plan(snap: &Snapshot, to: u32, who: Actor<'_>) -> Result<Plan, Refusal> {
    let Some(new) = snap.newer.iter().find(|d| d.version == to) else {
        let loaded: Vec<String> = snap.newer.iter().map(|d| d.version.to_string()).collect();
        return Err(Refusal::NotAllowed(format!(
            "version {to} is not a loaded version newer than the saga's version {} (newer loaded: {})",
            snap.def.version,
            if loaded.is_empty() { "none".to_owned() } else { loaded.join(", ") }
        )));
    };
    let armed: Vec<Armed> = snap
        .timers
        .iter()
        .map(|t| Armed { name: t.name.clone(), due: t.due, armed_version: t.armed_version })
        .collect();
    let migrated =
        migrate::migrate(&snap.def, new, &snap.saga, &armed).map_err(|r| Refusal::NotAllowed(r.to_string()))?;
    // One id per saga version, like every event an operator originates.
    let event_id = format!("ops:{}:{}:migrate", snap.saga.order_id, snap.saga.version);
    Ok(Plan { writes: vec![Write::Migrate { migrated: Box::new(migrated), event_id, actor: who.actor.to_owned() }] })
}
