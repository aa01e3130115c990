//! `devstack bench` at a toy size, so the benchmark keeps working between the runs whose
//! numbers go into docs/benchmark.md: every scenario runs on both sides without a failure, the
//! hot goods sells out exactly, the two sides take turns in rounds, and the JSON report
//! has what the table is made from.
//! The numbers themselves are not checked (debug build, tiny run). Needs MariaDB on
//! 127.0.0.1:3306 (scripts/test starts it).

use std::{process::Command, sync::Mutex};

/// The bench creates and drops databases of fixed names: one run at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn a_small_bench_runs_every_scenario_on_both_sides_and_reports_them() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_devstack"))
        .args([
            "bench",
            "--orders",
            "40",
            "--goods",
            "20",
            "--history",
            "3000",
            "--out",
        ])
        .arg(&out)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("devstack runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "devstack bench failed (is MariaDB running on 127.0.0.1:3306? scripts/test starts it)\n{stdout}\n{stderr}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the JSON report"))
            .expect("valid JSON");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let labels: Vec<String> = scenarios
        .iter()
        .map(|s| format!("{}-{}", s["scenario"], s["concurrency"]).replace('"', ""))
        .collect();
    assert_eq!(labels, ["spread-1", "spread-16", "spread-64", "hot-16"]);
    for scenario in scenarios {
        let orders = scenario["orders"].as_u64().expect("orders");
        for side in ["service", "baseline"] {
            assert_eq!(
                scenario[side]["ok"].as_u64(),
                Some(orders),
                "{side} of {scenario}"
            );
            assert!(
                scenario[side]["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0),
                "{side} of {scenario}"
            );
        }
        assert!(scenario["ratio"].as_f64().is_some_and(|r| r > 0.0));
        // The per-step breakdown comes from order_srv's own histograms: every order went
        // through every step once.
        let steps = scenario["service_steps"].as_array().expect("service_steps");
        for step in devstack::steps::SERIES {
            let found = steps
                .iter()
                .find(|s| s["step"] == step)
                .unwrap_or_else(|| panic!("step {step} missing in {scenario}"));
            assert_eq!(found["count"].as_u64(), Some(orders), "{step}: {found}");
            assert!(found["p99_ms_at_most"].as_f64().is_some_and(|ms| ms > 0.0));
        }
        assert!(
            scenario["cpu_ms_per_order"]["service"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0),
            "{scenario}"
        );
    }
    assert_eq!(scenarios[3]["oversell"].as_i64(), Some(0));

    // The history was seeded, and every probe ran on it without a failure; the heavy
    // buyer's order list was walked to its last page.
    assert_eq!(report["history"]["orders"].as_u64(), Some(3000));
    assert_eq!(report["history"]["heavy_buyer_orders"].as_u64(), Some(300));
    let probes = report["probes"].as_array().expect("probes");
    let names: Vec<&str> = probes.iter().filter_map(|p| p["probe"].as_str()).collect();
    assert_eq!(
        names,
        [
            "check-back barrier claim",
            "pay-timeout close",
            "reback (inventory)",
            "OrderList, every page",
            "OrderList, first page",
            "OrderList, last page"
        ]
    );
    for probe in probes {
        assert_eq!(probe["failed"].as_u64(), Some(0), "{probe}");
        assert!(probe["calls"].as_u64().is_some_and(|n| n > 0), "{probe}");
    }
    assert_eq!(
        probes[3]["calls"].as_u64(),
        Some(30),
        "300 orders, 10 a page"
    );

    // Every scenario ran in four rounds, the sides taking turns: neither always runs
    // right after the other.
    for scenario in scenarios {
        assert_eq!(scenario["rounds"].as_u64(), Some(4), "{scenario}");
    }
    let turns: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("bench: spread-16 "))
        .filter(|line| line.contains(" start (round "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    assert_eq!(
        turns,
        [
            "service", "baseline", "baseline", "service", "service", "baseline", "baseline",
            "service"
        ],
        "{stderr}"
    );

    // The logs stay, the broker's store (a preallocated 1.5 GB commit log) does not.
    let logs = stdout
        .lines()
        .find_map(|line| line.strip_prefix("process logs in "))
        .map(std::path::PathBuf::from)
        .expect("the bench names its log directory");
    assert!(logs.join("order_srv.log").exists(), "{}", logs.display());
    assert!(
        !logs.join("store").exists(),
        "{} keeps the store",
        logs.display()
    );
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--via-gateway`: a third side through a gateway process, on users of its own; the hot
/// goods holds stock for both sides that order through order_srv and sells out exactly.
#[test]
fn a_small_bench_via_the_gateway_places_every_order_of_the_third_side() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_devstack"))
        .args([
            "bench",
            "--orders",
            "24",
            "--goods",
            "20",
            "--only",
            "spread-16,hot-16",
        ])
        .args(["--via-gateway", "--out"])
        .arg(&out)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("devstack runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "devstack bench --via-gateway failed\n{}\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the JSON report"))
            .expect("valid JSON");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 2);
    for scenario in scenarios {
        let orders = scenario["orders"].as_u64().expect("orders");
        let gateway = &scenario["via_gateway"];
        assert_eq!(gateway["stats"]["ok"].as_u64(), Some(orders), "{scenario}");
        // Counted (in clock ticks: a toy run may round to zero).
        assert!(
            gateway["gateway_process_cpu_ms_per_order"]
                .as_f64()
                .is_some_and(|ms| ms >= 0.0),
            "the gateway process's CPU is reported: {scenario}"
        );
        assert!(
            gateway["cpu_ms_per_order"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0),
            "{scenario}"
        );
        assert_eq!(scenario["service"]["ok"].as_u64(), Some(orders));
    }
    assert_eq!(scenarios[1]["oversell"].as_i64(), Some(0));
    let turns: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("bench: spread-16 "))
        .filter(|line| line.contains(" start (round 1 "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    assert_eq!(turns, ["service", "gateway", "baseline"], "{stderr}");
    let logs = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            line.strip_prefix("process logs in ")
                .map(std::path::PathBuf::from)
        });
    if let Some(logs) = logs {
        let _ = std::fs::remove_dir_all(logs);
    }
}
