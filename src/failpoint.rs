//! Crash-test hooks. `ORDER_SAGA_FAILPOINTS="consumer.after_commit=1"` makes
//! the process abort (as abruptly as SIGKILL: no destructors, no flush) the
//! Nth time the named point is reached. Tests use it to prove that a crash in
//! a window between two durable steps loses nothing and doubles nothing.
//! Unset (always, in production), a hit is one relaxed atomic load.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub const ENV: &str = "ORDER_SAGA_FAILPOINTS";

fn points() -> &'static HashMap<String, (u32, AtomicU32)> {
    static POINTS: OnceLock<HashMap<String, (u32, AtomicU32)>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim().to_owned(), (v.trim().parse().ok()?, AtomicU32::new(0))))
            })
            .collect()
    })
}

/// Aborts the process if `name` is armed and this is its Nth hit.
pub fn hit(name: &str) {
    let points = points();
    if points.is_empty() {
        return;
    }
    if let Some((n, count)) = points.get(name)
        && count.fetch_add(1, Ordering::Relaxed) + 1 == *n
    {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}

/// Blocks the calling thread for `ms` milliseconds when `name` is armed with
/// `ms` (`ORDER_SAGA_FAILPOINTS="consumer.before_poll=8000"`): a consumer that
/// joins its group late, as after a slow rebalance.
pub fn pause(name: &str) {
    if let Some((ms, _)) = points().get(name) {
        eprintln!("failpoint {name}: pausing {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(u64::from(*ms)));
    }
}

/// Panics when `name` is armed with exactly `value`
/// (`ORDER_SAGA_FAILPOINTS="saga.apply.panic=evt-9"`): proves that a panic
/// while handling one event loses nothing and stalls nothing.
pub fn panic_on(name: &str, value: &str) {
    static RAW: OnceLock<Vec<(String, String)>> = OnceLock::new();
    let raw = RAW.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
            .collect()
    });
    if raw.iter().any(|(k, v)| k == name && v == value) {
        panic!("failpoint {name} reached for {value}");
    }
}
