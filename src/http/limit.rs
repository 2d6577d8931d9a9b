//! Per-caller request rate limit of the orders API (token buckets): a caller
//! over its budget gets 429 `rate_limited` with `Retry-After`. The caller is
//! the verified principal when tokens are required, else the peer address.
//! Off unless `ORDER_SAGA_HTTP_RATE_LIMIT` is set.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Callers remembered at most; idle ones are forgotten first.
const MAX_CALLERS: usize = 100_000;

/// One caller's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per caller: `rate` requests per second, up to `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate: f64::from(rate.max(1)), burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes one request from `caller`'s budget at `now`: `Ok`, or how long
    /// until it would be allowed.
    pub fn check(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_CALLERS && !buckets.contains_key(caller) {
            // Forget the callers whose buckets are full again (idle long enough).
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        }
        let b = buckets.entry(caller.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_burst_then_its_rate_and_others_are_not_affected() {
        let t0 = Instant::now();
        let l = RateLimiter::new(10, 3);
        for _ in 0..3 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
        let wait = l.check("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one token every 1/rate");
        assert_eq!(l.check("b", t0), Ok(()), "another caller has its own budget");
        assert_eq!(l.check("a", t0 + Duration::from_millis(100)), Ok(()));
        assert!(l.check("a", t0 + Duration::from_millis(100)).is_err());
        // Idle for a long time: the burst again, not more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.check("a", later), Ok(()));
        }
        assert!(l.check("a", later).is_err());
    }
}
