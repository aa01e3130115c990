//! The invariants of DESIGN.md §8, checked across both databases.
//!
//! Run it after quiescence (no CreateOrder in flight, check-backs, retries and pay
//! timeouts drained): I2 compares the two databases and is only meaningful then.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use serde::Deserialize;
use sqlx::MySqlPool;

/// One invariant's verdict, with the offending order_sns or goods on failure.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: &'static str,
    pub rule: &'static str,
    /// `false` when the audit lacked the input to check it (e.g. initial stock).
    pub checked: bool,
    pub violations: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// What the caller knows beyond the databases.
#[derive(Debug, Default, Clone)]
pub struct AuditInput {
    /// The stock of each goods before any order (I1); skipped when absent.
    pub initial_stock: Option<HashMap<i32, i64>>,
    /// order_sns of CreateOrder calls that returned OK (I4).
    pub acknowledged: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Line {
    goods_id: i32,
    num: i64,
}

/// Checks I1-I5 and returns one verdict each.
pub async fn audit(
    order_db: &MySqlPool,
    inventory_db: &MySqlPool,
    input: &AuditInput,
) -> anyhow::Result<Vec<Verdict>> {
    let stocks: Vec<(i32, i64)> =
        sqlx::query_as("SELECT goods_id, CAST(stocks AS SIGNED) FROM inventory")
            .fetch_all(inventory_db)
            .await
            .context("reading inventory")?;
    let details: Vec<(String, String, String)> =
        sqlx::query_as("SELECT order_sn, status, detail FROM stock_sell_detail")
            .fetch_all(inventory_db)
            .await
            .context("reading stock_sell_detail")?;
    let orders: Vec<(String, String)> = sqlx::query_as("SELECT order_sn, status FROM order_info")
        .fetch_all(order_db)
        .await
        .context("reading order_info")?;
    let order_goods: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT o.order_sn, g.goods_id, CAST(g.nums AS SIGNED) \
         FROM order_goods g JOIN order_info o ON o.id = g.order_id",
    )
    .fetch_all(order_db)
    .await
    .context("reading order_goods")?;

    let mut deducted_by_goods: BTreeMap<i32, i64> = BTreeMap::new();
    let mut deducted_lines: HashMap<&str, BTreeMap<i32, i64>> = HashMap::new();
    let mut detail_status: HashMap<&str, &str> = HashMap::new();
    let mut unreadable = Vec::new();
    for (order_sn, status, detail) in &details {
        detail_status.insert(order_sn, status);
        if status != "DEDUCTED" {
            continue;
        }
        match serde_json::from_str::<Vec<Line>>(detail) {
            Ok(lines) => {
                let per_order = deducted_lines.entry(order_sn).or_default();
                for line in lines {
                    *deducted_by_goods.entry(line.goods_id).or_default() += line.num;
                    *per_order.entry(line.goods_id).or_default() += line.num;
                }
            }
            Err(e) => unreadable.push(format!("{order_sn}: unreadable detail ({e})")),
        }
    }
    let order_status: HashMap<&str, &str> = orders
        .iter()
        .map(|(sn, st)| (sn.as_str(), st.as_str()))
        .collect();

    // I1: initial = current + Σ DEDUCTED.
    let i1 = match &input.initial_stock {
        None => Verdict {
            name: "I1 conservation",
            rule: "initial stock = current stock + deducted, per goods",
            checked: false,
            violations: Vec::new(),
        },
        Some(initial) => {
            let current: HashMap<i32, i64> = stocks.iter().copied().collect();
            let goods: BTreeSet<i32> = initial
                .keys()
                .chain(current.keys())
                .chain(deducted_by_goods.keys())
                .copied()
                .collect();
            let mut violations = unreadable.clone();
            for id in goods {
                let before = initial.get(&id).copied().unwrap_or(0);
                let now = current.get(&id).copied().unwrap_or(0);
                let deducted = deducted_by_goods.get(&id).copied().unwrap_or(0);
                if before != now + deducted {
                    violations.push(format!(
                        "goods {id}: initial {before} != current {now} + deducted {deducted}"
                    ));
                }
            }
            Verdict {
                name: "I1 conservation",
                rule: "initial stock = current stock + deducted, per goods",
                checked: true,
                violations,
            }
        }
    };

    // I2: DEDUCTED <=> the order exists and is not closed.
    let mut i2 = Vec::new();
    for (order_sn, status) in &detail_status {
        let open = order_status
            .get(order_sn)
            .is_some_and(|s| *s != "TRADE_CLOSED");
        if (*status == "DEDUCTED") != open {
            i2.push(format!(
                "{order_sn}: stock {status}, order {}",
                order_status.get(order_sn).copied().unwrap_or("missing")
            ));
        }
    }
    for (order_sn, status) in &order_status {
        if !detail_status.contains_key(order_sn) && *status != "TRADE_CLOSED" {
            i2.push(format!("{order_sn}: order {status} without any deduction"));
        }
    }
    i2.sort();

    // I3: never below zero.
    let i3: Vec<String> = stocks
        .iter()
        .filter(|(_, s)| *s < 0)
        .map(|(id, s)| format!("goods {id}: stock {s}"))
        .collect();

    // I4: every acknowledged order has its row and its deduction (or, once closed, its return).
    let mut i4 = Vec::new();
    for order_sn in &input.acknowledged {
        match (
            order_status.get(order_sn.as_str()),
            detail_status.get(order_sn.as_str()),
        ) {
            (None, _) => i4.push(format!("{order_sn}: acknowledged but no order row")),
            (Some(_), None) => i4.push(format!("{order_sn}: acknowledged but never deducted")),
            _ => {}
        }
    }

    // I5: each live deduction is exactly the order's goods: nothing deducted twice.
    let mut ordered: HashMap<&str, BTreeMap<i32, i64>> = HashMap::new();
    for (order_sn, goods_id, nums) in &order_goods {
        *ordered
            .entry(order_sn)
            .or_default()
            .entry(*goods_id)
            .or_default() += nums;
    }
    let mut i5 = Vec::new();
    for (order_sn, lines) in &deducted_lines {
        if let Some(expected) = ordered.get(order_sn)
            && expected != lines
        {
            i5.push(format!(
                "{order_sn}: deducted {lines:?}, ordered {expected:?}"
            ));
        }
    }
    i5.sort();

    Ok(vec![
        i1,
        Verdict {
            name: "I2 agreement",
            rule: "stock DEDUCTED <=> order exists and is not TRADE_CLOSED",
            checked: true,
            violations: i2,
        },
        Verdict {
            name: "I3 no oversell",
            rule: "stock never below zero",
            checked: true,
            violations: i3,
        },
        Verdict {
            name: "I4 durability",
            rule: "every acknowledged CreateOrder has its order row and its deduction",
            checked: true,
            violations: i4,
        },
        Verdict {
            name: "I5 exactly-once effect",
            rule: "each deduction equals its order's goods (nothing deducted or returned twice)",
            checked: true,
            violations: i5,
        },
    ])
}

/// One line per invariant, PASS/FAIL/SKIP, and the offenders under each failure.
pub fn report(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        let verdict = match (v.checked, v.passed()) {
            (false, _) => "SKIP",
            (true, true) => "PASS",
            (true, false) => "FAIL",
        };
        out.push_str(&format!("{verdict}  {:<24} {}\n", v.name, v.rule));
        for violation in v.violations.iter().take(50) {
            out.push_str(&format!("        {violation}\n"));
        }
        if v.violations.len() > 50 {
            out.push_str(&format!(
                "        ... and {} more\n",
                v.violations.len() - 50
            ));
        }
    }
    out
}

/// Panics with every violation: for tests.
pub fn assert_all_hold(verdicts: &[Verdict]) {
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(|v| format!("{}: {}", v.name, v.violations.join("; ")))
        .collect();
    assert!(
        failed.is_empty(),
        "invariants violated:\n{}",
        failed.join("\n")
    );
}
