//! `devstack demo` end to end: the broker and both services as processes, every live
//! scenario, its end state checked by the demo itself (it fails on any mismatch), then
//! the audit. Needs MariaDB on 127.0.0.1:3306 (scripts/test starts it).

use std::process::Command;

#[test]
fn the_demo_runs_every_scenario_to_its_end_state_and_the_audit_passes() {
    let output = Command::new(env!("CARGO_BIN_EXE_devstack"))
        .args(["demo", "--pay-timeout", "3s"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("devstack runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "devstack demo failed (is MariaDB running on 127.0.0.1:3306? scripts/test starts it)\n{stdout}\n{stderr}"
    );
    for heading in [
        "== 1. happy path",
        "== 2. insufficient stock",
        "== 3. the local transaction fails after Sell",
        "== 4. order_srv crashes before COMMIT",
        "== 5. pay timeout",
        "== 6. payment and timeout race",
        "== 7. the reply is lost",
        "== 8. the buyer cancels an unpaid order",
    ] {
        assert!(
            stdout.contains(heading),
            "missing scenario {heading:?}:\n{stdout}"
        );
    }
    assert_eq!(stdout.matches("PASS  I").count(), 6, "{stdout}");
    assert!(
        stdout.contains("demo: every scenario ended as DESIGN.md §9 says"),
        "{stdout}"
    );
}
