//! The operator actions: what a request may ask for. What each one does, and
//! whether the saga allows it now, is its plan (`plan/`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an operator can do to one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Re-send the current step's command with the same command id.
    RetryStep,
    /// Fire a pending timer now.
    FireTimer { timer: String },
    /// Move a pending timer (`at` an RFC 3339 time, or `after` a duration from now).
    RescheduleTimer {
        timer: String,
        #[serde(default)]
        at: Option<DateTime<Utc>>,
        #[serde(default)]
        after: Option<String>,
    },
    /// Disarm a pending timer.
    CancelTimer { timer: String },
    /// Cancel the order, compensating what the saga did (the definition's
    /// manual event for CANCELLED).
    Cancel,
    /// Deliver a manual event the definition declares and the current state accepts.
    Force { event: String },
    /// Lift the quarantine and replay the parked events in order.
    Release,
    /// Skip the poison event(s), then release.
    SkipPoison,
    /// Move the saga onto a newer definition version, where that version's
    /// `[migrate.from.<the saga's version>]` maps its state.
    Migrate { to_version: u32 },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::RetryStep => "retry_step",
            Action::FireTimer { .. } => "fire_timer",
            Action::RescheduleTimer { .. } => "reschedule_timer",
            Action::CancelTimer { .. } => "cancel_timer",
            Action::Cancel => "cancel",
            Action::Force { .. } => "force",
            Action::Release => "release",
            Action::SkipPoison => "skip_poison",
            Action::Migrate { .. } => "migrate",
        }
    }
}
