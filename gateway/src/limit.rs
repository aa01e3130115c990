//! The per-user rate limit: a token bucket per user id, refilled at the configured rate
//! up to the burst. A buyer over the limit gets 429 with `Retry-After`; other buyers are
//! not affected. Buckets of users who stopped calling are dropped once the map is large.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::StatusCode;

use crate::problem::Problem;

/// How many idle buckets may pile up before full ones are swept out.
const SWEEP_ABOVE: usize = 100_000;

pub struct Limiter {
    /// Tokens per second; 0 turns the limit off.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate_per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `user_id`'s bucket, or says how long until there is one.
    pub fn admit(&self, user_id: i64) -> Result<(), Problem> {
        self.admit_at(user_id, Instant::now())
    }

    fn admit_at(&self, user_id: i64, now: Instant) -> Result<(), Problem> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        // A poisoned lock only means another request panicked mid-update; the map of
        // f64s is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.refilled(now, rate, burst).tokens < burst);
        }
        let bucket = buckets.entry(user_id).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        *bucket = bucket.refilled(now, self.rate, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        // Under a second for any rate of at least one a second; never a panic.
        let wait = Duration::try_from_secs_f64((1.0 - bucket.tokens) / self.rate)
            .unwrap_or(Duration::from_secs(1));
        Err(Problem::gateway(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!("more than {} requests per second", self.rate),
        )
        .retry_after(wait.as_secs().saturating_add(1)))
    }
}

impl Bucket {
    fn refilled(self, now: Instant, rate: f64, burst: f64) -> Self {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        Self {
            tokens: (self.tokens + elapsed * rate).min(burst),
            at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Limiter;

    #[test]
    fn a_buyer_gets_the_burst_then_the_rate_and_others_are_untouched() {
        let limiter = Limiter::new(10, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.admit_at(1, start).is_ok());
        }
        let refused = limiter.admit_at(1, start).expect_err("over the burst");
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(limiter.admit_at(2, start).is_ok(), "another buyer");
        // A tenth of a second later one token is back.
        let later = start + Duration::from_millis(100);
        assert!(limiter.admit_at(1, later).is_ok());
        assert!(limiter.admit_at(1, later).is_err());
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off() {
        let limiter = Limiter::new(0, 1);
        let now = Instant::now();
        for _ in 0..100 {
            assert!(limiter.admit_at(1, now).is_ok());
        }
    }
}
