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
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    away: Option<Away>,
    /// When the last outage ended: a failure soon after it is the same outage's tail
    /// (calls that were already waiting when the link healed), not a new one.
    back_at: Option<Instant>,
}

/// A failure this soon after the dependency answered again is logged at INFO, not as a
/// new outage's WARN.
pub const RELAPSE_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Away {
    since: Instant,
    failures: u64,
    /// Began with a WARN (not a relapse): only its recovery opens a relapse window, so
    /// a dependency that keeps failing warns again at least every [`RELAPSE_WITHIN`].
    warned: bool,
}

impl Outage {
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            down: AtomicBool::new(false),
            state: Mutex::new(State {
                away: None,
                back_at: None,
            }),
        }
    }

    /// A failure that means the dependency does not answer. The first one of an outage
    /// is logged as a WARN (with `error`), or at INFO when the last outage ended less than
    /// [`RELAPSE_WITHIN`] ago; the rest are only counted. Returns whether this one was
    /// logged as a WARN.
    pub fn failed(&self, error: &dyn std::fmt::Display) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if let Some(away) = state.away.as_mut() {
            away.failures = away.failures.saturating_add(1);
            tracing::debug!(what = self.what, %error, "still unreachable");
            return false;
        }
        let now = Instant::now();
        let relapse = state
            .back_at
            .is_some_and(|back| now.saturating_duration_since(back) < RELAPSE_WITHIN);
        state.away = Some(Away {
            since: now,
            failures: 1,
            warned: !relapse,
        });
        self.down.store(true, Ordering::Release);
        if relapse {
            tracing::info!(
                what = self.what,
                %error,
                "{} unreachable again shortly after it came back",
                self.what
            );
            return false;
        }
        tracing::warn!(
            what = self.what,
            %error,
            "{} unreachable; further failures are counted until it answers again",
            self.what
        );
        true
    }

    /// The dependency answered: ends an outage (one INFO line), else nothing.
    pub fn answered(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some(Away {
            since,
            failures,
            warned,
        }) = state.away.take()
        {
            self.down.store(false, Ordering::Release);
            let now = Instant::now();
            if warned {
                state.back_at = Some(now);
            }
            let away_for = now.saturating_duration_since(since);
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
        // Calls that were waiting when it came back fail after the answer: the same
        // outage's tail, no second WARN (it still counts as down until the next answer).
        assert!(!mysql.failed(&"pool timed out"));
        assert!(mysql.is_down());
        mysql.answered();
        assert!(!mysql.is_down());
    }

    #[test]
    fn a_failure_long_after_the_last_outage_is_a_new_one() {
        let mysql = Outage::new("MySQL");
        assert!(mysql.failed(&"connection timed out"));
        mysql.answered();
        if let Ok(mut state) = mysql.state.lock() {
            state.back_at = std::time::Instant::now().checked_sub(super::RELAPSE_WITHIN);
        }
        assert!(
            mysql.failed(&"connection refused"),
            "a new outage is a WARN"
        );
    }

    #[test]
    fn a_dependency_that_keeps_relapsing_warns_again_once_the_window_has_passed() {
        let mysql = Outage::new("MySQL");
        assert!(mysql.failed(&"connection timed out"));
        mysql.answered();
        if let Ok(mut state) = mysql.state.lock() {
            // The WARNed outage ended almost a whole window ago.
            state.back_at = std::time::Instant::now()
                .checked_sub(super::RELAPSE_WITHIN - std::time::Duration::from_millis(50));
        }
        assert!(!mysql.failed(&"pool timed out"), "a relapse: INFO");
        mysql.answered();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The relapse's recovery did not open a new window.
        assert!(
            mysql.failed(&"connection refused"),
            "flapping for longer warns again"
        );
    }
}
