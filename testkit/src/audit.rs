//! The invariants of DESIGN.md §8, checked across both databases.
//!
//! Run it after quiescence (no CreateOrder in flight, check-backs, retries and pay
//! timeouts drained): I2 compares the two databases and is only meaningful then.
//!
//! I1-I5 are safety: they all hold while an unpaid order holds its stock forever. I6 is
//! liveness: no unpaid order outlives its pay timeout plus a stated slack. Its verdict also
//! tells who closed the closed orders and how late the pay-timeout messages came, and
//! counts the overdue sweep's closes apart: each is a pay-timeout message that did not
//! come in time, which the sweep hid from I6.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::Duration,
};

use anyhow::Context;
use serde::Deserialize;
use sqlx::MySqlPool;

/// Order statuses of a paid order: its deduction stays for good, and inventory may have
/// settled it (deleted its detail, counted it in `stock_settled`).
const PAID: [&str; 2] = ["TRADE_SUCCESS", "TRADE_FINISHED"];

/// One invariant's verdict, with the offending order_sns or goods on failure.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: &'static str,
    pub rule: &'static str,
    /// `false` when the audit lacked the input to check it (e.g. initial stock).
    pub checked: bool,
    pub violations: Vec<String>,
    /// What the verdict saw besides its violations (printed under it).
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// A checked invariant's verdict; it passed when `violations` is empty.
    fn new(name: &'static str, rule: &'static str, violations: Vec<String>) -> Self {
        Self {
            name,
            rule,
            checked: true,
            violations,
            notes: Vec::new(),
        }
    }

    /// An invariant the audit lacked the input to check.
    fn skipped(name: &'static str, rule: &'static str) -> Self {
        Self {
            checked: false,
            ..Self::new(name, rule, Vec::new())
        }
    }
}

/// What the caller knows beyond the databases.
#[derive(Debug, Default, Clone)]
pub struct AuditInput {
    /// The stock of each goods before any order (I1); skipped when absent.
    pub initial_stock: Option<HashMap<i32, i64>>,
    /// order_sns of CreateOrder calls that returned OK (I4).
    pub acknowledged: Vec<String>,
    /// The services' pay timeout and the slack I6 allows past it; I6 is skipped without.
    pub liveness: Option<Liveness>,
}

/// What I6 needs: the pay timeout the order services run with, and how late past it an
/// unpaid order may still be open once the system is quiet; with the reconciler's horizon,
/// also how old a deduction without a live order may get.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub pay_timeout: Duration,
    pub slack: Duration,
    /// inventory_srv's INVENTORY_RECONCILE_HORIZON (its rounds' interval belongs in the
    /// slack); `None` leaves that half of I6 unchecked.
    pub reconcile_horizon: Option<Duration>,
}

impl Liveness {
    /// The slack the audit states when none is given: the timer's one-second slots, the
    /// consumer's rebalance and retry, and a loaded CI machine.
    pub const DEFAULT_SLACK: Duration = Duration::from_secs(30);

    pub fn new(pay_timeout: Duration) -> Self {
        Self {
            pay_timeout,
            slack: Self::DEFAULT_SLACK,
            reconcile_horizon: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Line {
    goods_id: i32,
    num: i64,
}

/// Checks I1-I6 and returns one verdict each.
pub async fn audit(
    order_db: &MySqlPool,
    inventory_db: &MySqlPool,
    input: &AuditInput,
) -> anyhow::Result<Vec<Verdict>> {
    let rows = Rows::read(order_db, inventory_db).await?;
    let seen = Seen::of(&rows);
    Ok(vec![
        seen.conservation(input.initial_stock.as_ref()),
        seen.agreement(),
        seen.no_oversell(),
        seen.durability(&input.acknowledged),
        seen.exactly_once(),
        liveness(order_db, inventory_db, input.liveness).await?,
    ])
}

/// The rows I1-I5 read, as the two databases hold them.
struct Rows {
    /// `(goods_id, stocks)` of every goods.
    stocks: Vec<(i32, i64)>,
    /// `(order_sn, status, detail)` of every stock_sell_detail row.
    details: Vec<(String, String, String)>,
    /// `(order_sn, status)` of every order.
    orders: Vec<(String, String)>,
    /// `(order_sn, goods_id, nums)` of every order line.
    order_goods: Vec<(String, i32, i64)>,
    /// `(goods_id, nums, orders)` settled: paid orders' deductions whose detail rows
    /// inventory deleted once confirmed long enough.
    settled: Vec<(i32, i64, i64)>,
}

impl Rows {
    /// The inventory tables in one snapshot (the settle job moves units from a detail row
    /// to `stock_settled` while the audit reads: read apart, they would count twice), then
    /// the order tables.
    async fn read(order_db: &MySqlPool, inventory_db: &MySqlPool) -> anyhow::Result<Self> {
        use sqlx::Executor;
        // Its own connection, closed after: never back in the pool mid-transaction.
        let mut inv = inventory_db.acquire().await?.detach();
        inv.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        inv.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await?;
        let stocks = sqlx::query_as("SELECT goods_id, CAST(stocks AS SIGNED) FROM inventory")
            .fetch_all(&mut inv)
            .await
            .context("reading inventory")?;
        let details = sqlx::query_as("SELECT order_sn, status, detail FROM stock_sell_detail")
            .fetch_all(&mut inv)
            .await
            .context("reading stock_sell_detail")?;
        let settled = sqlx::query_as(
            "SELECT goods_id, CAST(nums AS SIGNED), CAST(orders AS SIGNED) FROM stock_settled",
        )
        .fetch_all(&mut inv)
        .await
        .context("reading stock_settled")?;
        inv.execute("COMMIT").await?;
        let orders = sqlx::query_as("SELECT order_sn, status FROM order_info")
            .fetch_all(order_db)
            .await
            .context("reading order_info")?;
        let order_goods = sqlx::query_as(
            "SELECT o.order_sn, g.goods_id, CAST(g.nums AS SIGNED) \
             FROM order_goods g JOIN order_info o ON o.id = g.order_id",
        )
        .fetch_all(order_db)
        .await
        .context("reading order_goods")?;
        Ok(Self {
            stocks,
            details,
            orders,
            order_goods,
            settled,
        })
    }
}

/// What I1-I5 share: the rows, indexed by order_sn and by goods.
struct Seen<'a> {
    rows: &'a Rows,
    /// Σ DEDUCTED per goods.
    deducted_by_goods: BTreeMap<i32, i64>,
    /// The goods each DEDUCTED detail holds.
    deducted_lines: HashMap<&'a str, BTreeMap<i32, i64>>,
    detail_status: HashMap<&'a str, &'a str>,
    order_status: HashMap<&'a str, &'a str>,
    /// DEDUCTED details whose goods could not be read (I1 violations).
    unreadable: Vec<String>,
}

impl<'a> Seen<'a> {
    fn of(rows: &'a Rows) -> Self {
        let mut seen = Self {
            rows,
            deducted_by_goods: BTreeMap::new(),
            deducted_lines: HashMap::new(),
            detail_status: HashMap::new(),
            order_status: rows
                .orders
                .iter()
                .map(|(sn, st)| (sn.as_str(), st.as_str()))
                .collect(),
            unreadable: Vec::new(),
        };
        for (order_sn, status, detail) in &rows.details {
            seen.detail_status.insert(order_sn, status);
            if status == "DEDUCTED" {
                seen.add_deduction(order_sn, detail);
            }
        }
        seen
    }

    fn add_deduction(&mut self, order_sn: &'a str, detail: &str) {
        match serde_json::from_str::<Vec<Line>>(detail) {
            Ok(lines) => {
                let per_order = self.deducted_lines.entry(order_sn).or_default();
                for line in lines {
                    *self.deducted_by_goods.entry(line.goods_id).or_default() += line.num;
                    *per_order.entry(line.goods_id).or_default() += line.num;
                }
            }
            Err(e) => self
                .unreadable
                .push(format!("{order_sn}: unreadable detail ({e})")),
        }
    }

    /// I1: initial = current + Σ DEDUCTED + settled.
    fn conservation(&self, initial: Option<&HashMap<i32, i64>>) -> Verdict {
        const NAME: &str = "I1 conservation";
        const RULE: &str = "initial stock = current stock + deducted + settled, per goods";
        let Some(initial) = initial else {
            return Verdict::skipped(NAME, RULE);
        };
        let current: HashMap<i32, i64> = self.rows.stocks.iter().copied().collect();
        let settled: HashMap<i32, i64> =
            self.rows.settled.iter().map(|(g, n, _)| (*g, *n)).collect();
        let goods: BTreeSet<i32> = initial
            .keys()
            .chain(current.keys())
            .chain(self.deducted_by_goods.keys())
            .chain(settled.keys())
            .copied()
            .collect();
        let mut violations = self.unreadable.clone();
        for id in goods {
            let before = initial.get(&id).copied().unwrap_or(0);
            let now = current.get(&id).copied().unwrap_or(0);
            let deducted = self.deducted_by_goods.get(&id).copied().unwrap_or(0);
            let settled = settled.get(&id).copied().unwrap_or(0);
            if before != now.saturating_add(deducted).saturating_add(settled) {
                violations.push(format!(
                    "goods {id}: initial {before} != current {now} + deducted {deducted} \
                     + settled {settled}"
                ));
            }
        }
        Verdict::new(NAME, RULE, violations)
    }

    /// I2: DEDUCTED <=> the order exists and is not closed; a paid order without a
    /// detail must be one inventory settled, and the settled totals (units and orders per
    /// goods) must be exactly those of such orders.
    fn agreement(&self) -> Verdict {
        let mut violations = Vec::new();
        for (order_sn, status) in &self.detail_status {
            let order = self.order_status.get(order_sn);
            let open = order.is_some_and(|s| *s != "TRADE_CLOSED");
            if (*status == "DEDUCTED") != open {
                violations.push(format!(
                    "{order_sn}: stock {status}, order {}",
                    order.copied().unwrap_or("missing")
                ));
            }
        }
        let mut settled_orders: HashSet<&str> = HashSet::new();
        for (order_sn, status) in &self.order_status {
            if self.detail_status.contains_key(order_sn) || *status == "TRADE_CLOSED" {
                continue;
            }
            if PAID.contains(status) {
                settled_orders.insert(order_sn);
            } else {
                violations.push(format!("{order_sn}: order {status} without any deduction"));
            }
        }
        violations.extend(self.settled_mismatches(&settled_orders));
        violations.sort();
        Verdict::new(
            "I2 agreement",
            "stock DEDUCTED <=> order exists and is not TRADE_CLOSED (or paid and settled)",
            violations,
        )
    }

    /// Where `stock_settled` differs from the goods of the paid orders without a detail.
    fn settled_mismatches(&self, settled_orders: &HashSet<&str>) -> Vec<String> {
        let mut expected: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for (order_sn, goods_id, nums) in &self.rows.order_goods {
            if settled_orders.contains(order_sn.as_str()) {
                let (units, orders) = expected.entry(*goods_id).or_default();
                *units = units.saturating_add(*nums);
                *orders = orders.saturating_add(1);
            }
        }
        let recorded: BTreeMap<i32, (i64, i64)> = self
            .rows
            .settled
            .iter()
            .filter(|(_, nums, orders)| *nums != 0 || *orders != 0)
            .map(|(g, nums, orders)| (*g, (*nums, *orders)))
            .collect();
        let goods: BTreeSet<i32> = expected.keys().chain(recorded.keys()).copied().collect();
        goods
            .into_iter()
            .filter_map(|id| {
                let want = expected.get(&id).copied().unwrap_or_default();
                let have = recorded.get(&id).copied().unwrap_or_default();
                (want != have).then(|| {
                    format!(
                        "goods {id}: settled {} units of {} orders, but the paid orders \
                         without a detail hold {} units of {} orders",
                        have.0, have.1, want.0, want.1
                    )
                })
            })
            .collect()
    }

    /// I3: never below zero.
    fn no_oversell(&self) -> Verdict {
        let violations = self
            .rows
            .stocks
            .iter()
            .filter(|(_, s)| *s < 0)
            .map(|(id, s)| format!("goods {id}: stock {s}"))
            .collect();
        Verdict::new("I3 no oversell", "stock never below zero", violations)
    }

    /// I4: every acknowledged order has its row and its deduction (or, once closed, its
    /// return).
    fn durability(&self, acknowledged: &[String]) -> Verdict {
        let mut violations = Vec::new();
        for order_sn in acknowledged {
            match (
                self.order_status.get(order_sn.as_str()),
                self.detail_status.get(order_sn.as_str()),
            ) {
                (None, _) => violations.push(format!("{order_sn}: acknowledged but no order row")),
                (Some(status), None) if !PAID.contains(status) => {
                    violations.push(format!("{order_sn}: acknowledged but never deducted"));
                }
                _ => {}
            }
        }
        Verdict::new(
            "I4 durability",
            "every acknowledged CreateOrder has its order row and its deduction",
            violations,
        )
    }

    /// I5: each live deduction is exactly the order's goods: nothing deducted twice.
    fn exactly_once(&self) -> Verdict {
        let mut ordered: HashMap<&str, BTreeMap<i32, i64>> = HashMap::new();
        for (order_sn, goods_id, nums) in &self.rows.order_goods {
            *ordered
                .entry(order_sn)
                .or_default()
                .entry(*goods_id)
                .or_default() += nums;
        }
        let mut violations = Vec::new();
        for (order_sn, lines) in &self.deducted_lines {
            if let Some(expected) = ordered.get(order_sn)
                && expected != lines
            {
                violations.push(format!(
                    "{order_sn}: deducted {lines:?}, ordered {expected:?}"
                ));
            }
        }
        violations.sort();
        Verdict::new(
            "I5 exactly-once effect",
            "each deduction equals its order's goods (nothing deducted or returned twice)",
            violations,
        )
    }
}

/// I6: once the system is quiet, no unpaid order is older than its pay timeout plus the
/// slack. Notes: who closed the closed orders, how late after their pay timeout the
/// pay-timeout messages closed theirs, and the overdue sweep's closes.
async fn liveness(
    order_db: &MySqlPool,
    inventory_db: &MySqlPool,
    liveness: Option<Liveness>,
) -> anyhow::Result<Verdict> {
    const NAME: &str = "I6 liveness";
    let Some(Liveness {
        pay_timeout,
        slack,
        reconcile_horizon,
    }) = liveness
    else {
        return Ok(Verdict::skipped(
            NAME,
            "no unpaid order outlives its pay timeout (pay timeout not given)",
        ));
    };
    let limit = pay_timeout.saturating_add(slack);
    // Ages by the database's clock, the one that stamped created_at.
    let unpaid: Vec<(String, i64)> = sqlx::query_as(
        "SELECT order_sn, TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) FROM order_info \
         WHERE status = 'WAIT_BUYER_PAY' ORDER BY created_at",
    )
    .fetch_all(order_db)
    .await
    .context("reading unpaid orders")?;
    let mut violations: Vec<String> = unpaid
        .iter()
        .filter(|(_, age)| Duration::from_micros(u64::try_from(*age).unwrap_or(0)) > limit)
        .map(|(order_sn, age)| {
            format!(
                "{order_sn}: unpaid for {:.1}s, pay timeout {:?} + slack {:?}",
                *age as f64 / 1e6,
                pay_timeout,
                slack
            )
        })
        .collect();
    if let Some(horizon) = reconcile_horizon {
        violations.extend(
            stranded_deductions(order_db, inventory_db, horizon.saturating_add(slack)).await?,
        );
    }
    let closes = close_report(order_db, pay_timeout).await?;
    Ok(Verdict {
        name: NAME,
        rule: "once quiet, no unpaid order outlives its pay timeout + slack, no deduction without a live order its reconciler horizon + slack",
        checked: true,
        violations,
        notes: closes.notes(slack),
    })
}

/// DEDUCTED details older than `limit` whose order is missing or closed: stock nothing
/// returned within the reconciler's horizon.
async fn stranded_deductions(
    order_db: &MySqlPool,
    inventory_db: &MySqlPool,
    limit: Duration,
) -> anyhow::Result<Vec<String>> {
    let old: Vec<(String, i64)> = sqlx::query_as(
        "SELECT order_sn, TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) FROM stock_sell_detail \
         WHERE status = 'DEDUCTED' AND created_at < NOW(6) - INTERVAL ? MICROSECOND",
    )
    .bind(u64::try_from(limit.as_micros()).unwrap_or(u64::MAX))
    .fetch_all(inventory_db)
    .await
    .context("reading old deductions")?;
    let live: BTreeSet<String> =
        sqlx::query_scalar("SELECT order_sn FROM order_info WHERE status <> 'TRADE_CLOSED'")
            .fetch_all(order_db)
            .await
            .context("reading live orders")?
            .into_iter()
            .collect();
    Ok(old
        .into_iter()
        .filter(|(order_sn, _)| !live.contains(order_sn))
        .map(|(order_sn, age)| {
            format!(
                "{order_sn}: stock deducted {:.1}s ago without a live order (reconciler horizon + slack {limit:?})",
                age as f64 / 1e6
            )
        })
        .collect())
}

/// Who closed the closed orders (`order_info.closed_by`), and how late the pay-timeout
/// messages closed theirs.
#[derive(Debug, Clone, Default)]
pub struct CloseReport {
    pub by_pay_timeout: usize,
    pub by_cancel: usize,
    pub by_sweep: usize,
    /// Closed before `closed_by` existed (older rows).
    pub unattributed: usize,
    /// Seconds past its pay timeout each pay-timeout close came, sorted.
    pub lateness: Vec<f64>,
}

impl CloseReport {
    /// The lateness at quantile `q` (0..=1), 0 without closes.
    pub fn lateness_at(&self, q: f64) -> f64 {
        if self.lateness.is_empty() {
            return 0.0;
        }
        let last = self.lateness.len() - 1;
        let i = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
        self.lateness.get(i.min(last)).copied().unwrap_or(0.0)
    }

    fn notes(&self, slack: Duration) -> Vec<String> {
        let mut notes = vec![format!(
            "closed by pay timeout {}, by cancel {}, by the overdue sweep {}{}",
            self.by_pay_timeout,
            self.by_cancel,
            self.by_sweep,
            if self.unattributed > 0 {
                format!(", unattributed {}", self.unattributed)
            } else {
                String::new()
            }
        )];
        if !self.lateness.is_empty() {
            notes.push(format!(
                "pay-timeout closes after their timeout: p50 {:.1}s, p99 {:.1}s, max {:.1}s (slack {:?})",
                self.lateness_at(0.5),
                self.lateness_at(0.99),
                self.lateness_at(1.0),
                slack
            ));
        }
        if self.by_sweep > 0 {
            notes.push(format!(
                "{} pay-timeout messages never came in time: the overdue sweep closed their orders",
                self.by_sweep
            ));
        }
        notes
    }
}

/// Reads who closed the closed orders and how late the pay-timeout closes were.
pub async fn close_report(
    order_db: &MySqlPool,
    pay_timeout: Duration,
) -> anyhow::Result<CloseReport> {
    let rows: Vec<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT closed_by, TIMESTAMPDIFF(MICROSECOND, created_at, closed_at) FROM order_info \
         WHERE status = 'TRADE_CLOSED'",
    )
    .fetch_all(order_db)
    .await
    .context("reading closed orders")?;
    let mut report = CloseReport::default();
    let timeout = pay_timeout.as_secs_f64();
    for (by, open_micros) in rows {
        match by.as_deref() {
            Some("pay_timeout") => {
                report.by_pay_timeout += 1;
                if let Some(micros) = open_micros {
                    report
                        .lateness
                        .push((micros as f64 / 1e6 - timeout).max(0.0));
                }
            }
            Some("cancel") => report.by_cancel += 1,
            Some("sweep") => report.by_sweep += 1,
            _ => report.unattributed += 1,
        }
    }
    report.lateness.sort_by(f64::total_cmp);
    Ok(report)
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
        for note in &v.notes {
            out.push_str(&format!("        note: {note}\n"));
        }
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

/// The names of the invariants that failed, in order.
pub fn failed(verdicts: &[Verdict]) -> Vec<&'static str> {
    verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(|v| v.name)
        .collect()
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
