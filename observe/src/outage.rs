//! Quiet outages: when a dependency (MySQL, the broker, the other service) stops
//! answering, a service logs one WARN, counts the failures that follow without logging
//! each, and logs one INFO when the dependency answers again, with how long it was away
//! and how many attempts failed meanwhile. Without this, every call and every reconnect
//! attempt during an outage wrote its own ERROR line (1,130 in a 20 s broker partition),
//! burying what happened in what kept happening.
//!
//! [`Outage::failed`] is called where a failure that means "unreachable" is seen;
//! [`Outage::answered`] where the dependency just answered (cheap: one atomic load while
//! nothing is wrong).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// One dependency's state: up, or away since a moment with a count of failures.
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    down: AtomicBool,
    since: Mutex<Option<Away>>,
}

#[derive(Debug, Clone, Copy)]
struct Away {
    since: Instant,
    failures: u64,
}

impl Outage {
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            down: AtomicBool::new(false),
            since: Mutex::new(None),
        }
    }

    /// A failure that means the dependency does not answer. The first one of an outage
    /// is logged as a WARN (with `error`); the rest are only counted. Returns whether
    /// this one was logged.
    pub fn failed(&self, error: &dyn std::fmt::Display) -> bool {
        let Ok(mut away) = self.since.lock() else {
            return false;
        };
        match away.as_mut() {
            Some(away) => {
                away.failures = away.failures.saturating_add(1);
                tracing::debug!(what = self.what, %error, "still unreachable");
                false
            }
            None => {
                *away = Some(Away {
                    since: Instant::now(),
                    failures: 1,
                });
                self.down.store(true, Ordering::Release);
                tracing::warn!(
                    what = self.what,
                    %error,
                    "{} unreachable; further failures are counted until it answers again",
                    self.what
                );
                true
            }
        }
    }

    /// The dependency answered: ends an outage (one INFO line), else nothing.
    pub fn answered(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut away) = self.since.lock() else {
            return;
        };
        if let Some(Away { since, failures }) = away.take() {
            self.down.store(false, Ordering::Release);
            let away_for = since.elapsed();
            tracing::info!(
                what = self.what,
                away_for = ?Duration::from_millis(u64::try_from(away_for.as_millis()).unwrap_or(u64::MAX)),
                failures,
                "{} answers again after {:.1}s ({failures} failed attempts)",
                self.what,
                away_for.as_secs_f64()
            );
        }
    }

    /// Whether an outage is in progress.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::Outage;

    #[test]
    fn one_warning_per_outage_and_back_to_normal_after_an_answer() {
        let mysql = Outage::new("MySQL");
        assert!(!mysql.is_down());
        mysql.answered();
        assert!(mysql.failed(&"connection timed out"));
        for _ in 0..1_000 {
            assert!(!mysql.failed(&"connection timed out"));
        }
        assert!(mysql.is_down());
        mysql.answered();
        assert!(!mysql.is_down());
        // The next outage is logged again.
        assert!(mysql.failed(&"connection refused"));
    }
}
