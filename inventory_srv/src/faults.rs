//! Fault injection in the reback consumer, for tests and the chaos run; compiled in only
//! with the `failpoints` feature (the `fail` crate). A failpoint's `return(...)` value
//! names the order_sn it hits (or `*`); `<target>:crash` aborts the process there.
//!
//! Points: `inventory.before_reback` (the delivery fails before the reback transaction,
//! as a database error would).

/// Whether the failpoint `point` is set for this order.
#[cfg(feature = "failpoints")]
pub fn triggered(point: &str, order_sn: &str) -> bool {
    let Some(value) = fail::eval(point, |value| value.unwrap_or_default()) else {
        return false;
    };
    let (target, action) = value.split_once(':').unwrap_or((value.as_str(), ""));
    if target != "*" && target != order_sn {
        return false;
    }
    if action == "crash" {
        eprintln!("failpoint {point}: crashing the process");
        std::process::abort();
    }
    true
}

#[cfg(not(feature = "failpoints"))]
pub fn triggered(_point: &str, _order_sn: &str) -> bool {
    false
}
