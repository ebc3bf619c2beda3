//! Per-store token buckets: `events_per_second` refill, `burst` capacity. A request takes
//! one token per event; when the bucket cannot cover it, the answer is 429 with the
//! seconds until it could.

use std::time::Instant;

use dashmap::DashMap;

use crate::config::RateLimit;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The rate limiter of all stores.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(cfg: &RateLimit) -> Self {
        RateLimiter { rate: cfg.events_per_second, burst: cfg.burst, buckets: DashMap::new() }
    }

    /// Takes `n` tokens for `store_id` at `now`; `Err(seconds to wait)` when there are
    /// too few. A request larger than the burst can never pass and waits a full refill.
    pub fn take(&self, store_id: &str, n: usize, now: Instant) -> Result<(), u64> {
        let n = n as f64;
        let mut entry = self
            .buckets
            .entry(store_id.to_string())
            .or_insert(Bucket { tokens: self.burst, at: now });
        let b = entry.value_mut();
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else {
            let missing = n.min(self.burst) - b.tokens;
            Err((missing / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let rl = RateLimiter::new(&RateLimit { events_per_second: 10.0, burst: 20.0 });
        let t0 = Instant::now();
        assert_eq!(rl.take("s", 15, t0), Ok(()));
        assert_eq!(rl.take("s", 10, t0), Err(1));
        assert_eq!(rl.take("other", 20, t0), Ok(()), "stores have separate buckets");
        assert_eq!(rl.take("s", 10, t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(rl.take("s", 1, t0 + Duration::from_millis(500)), Err(1));
        assert_eq!(rl.take("s", 30, t0 + Duration::from_secs(100)), Err(1), "larger than burst");
    }
}
