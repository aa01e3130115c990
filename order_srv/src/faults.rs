//! Fault injection at the protocol's steps, for the failure-table tests and the chaos run.
//!
//! Built on the `fail` crate and compiled in only with the `failpoints` feature. A
//! failpoint's `return(...)` value says whom it hits: `*` (every order) or one user id,
//! so parallel tests sharing one process don't trip over each other's faults; for
//! `pause` points it is `<target>:<millis>`; `<target>:crash` aborts the process there
//! (the chaos run sets it through the `FAILPOINTS` environment variable).
//!
//! Points: `order.after_half_message`, `order.after_sell`, `order.pause_before_barrier`,
//! `order.fail_local_tx`, `order.pause_before_commit`, `order.after_local_commit`,
//! `order.fail_reback_send`, `order.drop_pay_timeout` (the pay-timeout message is lost).

use std::time::Duration;

/// Whether the failpoint `point` is set for this user.
pub fn triggered(point: &str, user_id: i64) -> bool {
    target_value(point, user_id).is_some()
}

/// How long to pause at `point` for this user, if it is set.
pub fn pause(point: &str, user_id: i64) -> Option<Duration> {
    let millis = target_value(point, user_id)?;
    Some(Duration::from_millis(millis.parse().unwrap_or(0)))
}

/// The part of the failpoint's value after `<target>:` (empty without one) when it
/// targets this user.
fn target_value(point: &str, user_id: i64) -> Option<String> {
    target_value_for(point, &user_id.to_string())
}

#[cfg(feature = "failpoints")]
fn target_value_for(point: &str, whom: &str) -> Option<String> {
    let value = fail::eval(point, |value| value.unwrap_or_default())?;
    let (target, rest) = value.split_once(':').unwrap_or((value.as_str(), ""));
    if target != "*" && target != whom {
        return None;
    }
    if rest == "crash" {
        // The chaos run's process kill at an exact protocol step.
        eprintln!("failpoint {point}: crashing the process");
        std::process::abort();
    }
    Some(rest.to_owned())
}

#[cfg(not(feature = "failpoints"))]
fn target_value_for(_point: &str, _whom: &str) -> Option<String> {
    None
}
