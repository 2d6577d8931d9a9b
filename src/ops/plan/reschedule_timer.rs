//! `reschedule_timer`: move an armed timer to `at` (RFC 3339) or `after` a
//! duration from now — the database's now, like every due time.

use chrono::{DateTime, Utc};

use super::{Plan, Refusal, Snapshot, Write};

pub(super) fn plan(
    snap: &Snapshot,
    timer: &str,
    at: Option<DateTime<Utc>>,
    after: Option<&str>,
) -> Result<Plan, Refusal> {
    snap.timer(timer)?;
    let due = due_time(snap.now, at, after)?;
    Ok(Plan { writes: vec![Write::TimerDue { timer: timer.to_owned(), due }] })
}

/// The new due time: exactly one of `at` or `after`, within [`crate::saga::MAX_TIMER`] of `now`.
fn due_time(now: DateTime<Utc>, at: Option<DateTime<Utc>>, after: Option<&str>) -> Result<DateTime<Utc>, Refusal> {
    let bad = Refusal::BadRequest;
    match (at, after) {
        (Some(t), None) => {
            let latest =
                chrono::Duration::from_std(crate::saga::MAX_TIMER).ok().and_then(|d| now.checked_add_signed(d));
            if latest.is_some_and(|l| t <= l) && t.timestamp() >= 0 {
                Ok(t)
            } else {
                Err(bad(format!("at: {t} is before 1970 or more than 366 days away; a timer may last at most that")))
            }
        }
        (None, Some(d)) => {
            let d = humantime::parse_duration(d).map_err(|e| bad(format!("after: {e} (e.g. 30m)")))?;
            let d = crate::saga::check_timer(d).map_err(|e| bad(format!("after: {e}")))?;
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| bad("after: out of range".into()))
        }
        _ => Err(bad("give exactly one of `at` (RFC 3339) or `after` (e.g. 30m)".into())),
    }
}
