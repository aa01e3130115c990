//! The model checked exhaustively, and each deliberate mistake found with its trace.

use std::time::Instant;

use model::{Action, Bugs, Protocol, trace};
use stateright::{Checker, Model};

/// Checks every reachable state; returns the counterexample of `property`, if any.
fn check(bugs: Bugs, property: &'static str) -> Option<Vec<Action>> {
    let started = Instant::now();
    let checker = Protocol {
        bugs,
        same_request_id: false,
    }
    .checker()
    .spawn_bfs()
    .join();
    eprintln!(
        "{bugs:?}: {} states ({} unique), depth {}, {:?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker.discovery(property).map(|path| path.into_actions())
}

/// Checks every reachable state of `protocol` and asserts every property.
fn assert_holds(protocol: Protocol, what: &str) {
    let started = Instant::now();
    let checker = protocol.checker().spawn_bfs().join();
    eprintln!(
        "{what}: {} states ({} unique), depth {}, checked in {:?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    assert!(checker.is_done(), "the state space was not exhausted");
    // Fails with the counterexample if an `always` property breaks, or if a `sometimes`
    // example (an order paid, an order closed by its timeout) is never reached.
    checker.assert_properties();
}

#[test]
fn every_interleaving_of_the_protocol_keeps_every_property() {
    assert_holds(Protocol::default(), "protocol");
}

#[test]
fn every_interleaving_with_a_shared_request_id_keeps_every_property() {
    assert_holds(
        Protocol {
            bugs: Bugs::default(),
            same_request_id: true,
        },
        "protocol with a request_id",
    );
}

fn assert_found(bugs: Bugs, property: &'static str) {
    let actions = check(bugs, property)
        .unwrap_or_else(|| panic!("{bugs:?}: no counterexample of {property:?}"));
    eprintln!("{property} broken by {bugs:?}:\n{}", trace(&actions));
    assert!(!actions.is_empty());
}

#[test]
fn a_check_back_that_does_not_claim_the_barrier_returns_stock_of_an_order_that_commits() {
    assert_found(
        Bugs {
            check_back_without_barrier: true,
            ..Bugs::default()
        },
        "I2 agreement (quiet)",
    );
}

#[test]
fn a_local_transaction_without_its_barrier_row_commits_after_the_check_back_said_aborted() {
    assert_found(
        Bugs {
            local_tx_without_barrier: true,
            ..Bugs::default()
        },
        "I2 agreement (quiet)",
    );
}

#[test]
fn a_reback_that_is_not_idempotent_returns_stock_twice() {
    assert_found(
        Bugs {
            reback_not_idempotent: true,
            ..Bugs::default()
        },
        "I5 exactly-once effect",
    );
}

/// Checked without the reconciler: it would return this stock after its horizon, but
/// the protocol must not need the safety net for it.
#[test]
fn a_sell_that_ignores_the_tombstone_deducts_stock_nobody_returns() {
    assert_found(
        Bugs {
            sell_ignores_tombstone: true,
            no_reconciler: true,
            ..Bugs::default()
        },
        "I2 agreement (quiet)",
    );
}

#[test]
fn a_pay_timeout_that_does_not_claim_the_barrier_leaves_an_order_that_never_closes() {
    assert_found(
        Bugs {
            timeout_without_barrier: true,
            ..Bugs::default()
        },
        "every unpaid order closes (quiet)",
    );
}

#[test]
fn an_unconditional_timeout_close_closes_a_paid_order() {
    assert_found(
        Bugs {
            unconditional_timeout_close: true,
            ..Bugs::default()
        },
        "a paid order is never closed",
    );
}

/// Without the reconciler, the broker giving up on a half message (order_srv away longer
/// than `transactionCheckMax` check-backs) leaves a deduction nobody returns. The model
/// assumed before that check-backs never end, which is why it missed this.
#[test]
fn without_the_reconciler_a_deduction_outlives_the_brokers_check_backs() {
    let bugs = Bugs {
        no_reconciler: true,
        ..Bugs::default()
    };
    let property = "every deduction without a live order comes back (quiet)";
    let actions = check(bugs, property)
        .unwrap_or_else(|| panic!("{bugs:?}: no counterexample of {property:?}"));
    eprintln!("{property} broken by {bugs:?}:\n{}", trace(&actions));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::BrokerGivesUp(_))),
        "the trace should end with the broker giving up: {actions:?}"
    );
}
