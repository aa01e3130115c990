//! `devstack bench --history N`: past orders in every table an order touches, seeded in
//! bulk (`INSERT ... SELECT` over generated numbers, in chunks, not through the API), and
//! what the paths that look rows up cost on top of them.
//!
//! The history is N orders over six days, the newest 40 minutes old (inside every
//! retention, so no purge or settle removes them while the bench runs, and every later
//! timestamp of theirs, a close or a confirmation, is in the past): 65% paid (their deductions confirmed by
//! the reconciler), 25% closed by their pay timeout and 10% cancelled (their details
//! RETURNED), one or two goods each; a committed barrier row each, and every 50th a
//! never-placed order's 'aborted' barrier and tombstone. Users: one heavy buyer with
//! min(100,000, N/10) orders, four with N/100 each, the rest about 20 orders per user.
//! On top, at every size, 2,000 orders of the last few minutes: half paid, half unpaid
//! with their stock deducted, for the probes.
//!
//! The probes time, one call at a time, after the scenarios: a check-back's barrier claim
//! (order_srv's own function), the pay-timeout consumer's statements closing an unpaid
//! order, the reback consumer's transaction returning its stock (inventory_srv's own
//! function), and OrderList over gRPC for the heavy buyer: every page, then the first and
//! the last page again and again.

use std::time::{Duration, Instant};

use proto::order::{self as pb, order_client::OrderClient};
use serde_json::json;
use sqlx::{ConnectOptions, Connection, MySqlConnection, MySqlPool};
use tonic::transport::Channel;

use crate::driver::{ms, percentile};

/// The orders of the last few minutes seeded at every size, for the probes.
const RECENT: u64 = 2_000;
/// Rows per `INSERT ... SELECT` (five digits of generated numbers, [`numbers`]).
const CHUNK: u64 = 100_000;
/// The heavy buyer whose order list is probed.
pub const HEAVY_USER: i64 = 900_000_001;
/// Calls per probe.
const PROBES: usize = 500;

/// Where the history went, for the probes.
#[derive(Debug, Clone, Copy)]
pub struct History {
    pub orders: u64,
    pub heavy_orders: u64,
    pub seeded_in: Duration,
}

/// Seeds `orders` past orders (and the recent ones) into an order and an inventory
/// database, with goods ids in `1..=goods`.
pub async fn seed(
    order_db: &MySqlPool,
    inventory_db: &MySqlPool,
    orders: u64,
    goods: i32,
) -> anyhow::Result<History> {
    let started = Instant::now();
    let goods = u64::try_from(goods.max(2))?;
    let total = orders.saturating_add(RECENT);
    // Connections of their own: each statement takes seconds by design, so the pools'
    // slow-statement log (which prints the whole statement) stays off for them.
    let quiet = |pool: &MySqlPool| {
        (*pool.connect_options())
            .clone()
            .log_slow_statements(log::LevelFilter::Off, Duration::ZERO)
    };
    let mut order_conn = MySqlConnection::connect_with(&quiet(order_db)).await?;
    let mut inventory_conn = MySqlConnection::connect_with(&quiet(inventory_db)).await?;
    let mut from = 1;
    while from <= total {
        let to = from.saturating_add(CHUNK - 1).min(total);
        let rows = rows_sql(orders, goods, from, to);
        for statement in order_statements(&rows) {
            sqlx::query(&statement).execute(&mut order_conn).await?;
        }
        for statement in inventory_statements(&rows) {
            sqlx::query(&statement).execute(&mut inventory_conn).await?;
        }
        from = to + 1;
    }
    // Fresh statistics, as a database that grew to this size would have.
    for table in ["order_info", "order_goods", "tx_barrier"] {
        sqlx::query(&format!("ANALYZE TABLE {table}"))
            .execute(order_db)
            .await?;
    }
    sqlx::query("ANALYZE TABLE stock_sell_detail")
        .execute(inventory_db)
        .await?;
    Ok(History {
        orders,
        heavy_orders: heavy_orders(orders),
        seeded_in: started.elapsed(),
    })
}

fn heavy_orders(orders: u64) -> u64 {
    (orders / 10).min(100_000)
}

/// The derived table of orders `from..=to`: seq, sn, user_id, status, closed_by, created,
/// g1, n1, g2 (NULL for a one-goods order), n2, recent (0/1).
fn rows_sql(orders: u64, goods: u64, from: u64, to: u64) -> String {
    const SIX_DAYS_US: u64 = 6 * 86_400 * 1_000_000;
    let step_us = SIX_DAYS_US / orders.max(1);
    let heavy = heavy_orders(orders);
    let others = orders / 100;
    let regular_users = (orders / 20).max(1);
    let total = orders + RECENT;
    format!(
        "(SELECT seq, CONCAT('h', seq) AS sn, \
           CASE WHEN seq <= {heavy} THEN {HEAVY_USER} \
                WHEN seq <= {heavy} + 4 * {others} THEN {HEAVY_USER} + 1 + seq % 4 \
                ELSE 500000000 + seq % {regular_users} END AS user_id, \
           CASE WHEN seq > {orders} THEN IF(seq % 2 = 0, 'WAIT_BUYER_PAY', 'TRADE_SUCCESS') \
                WHEN seq % 100 < 60 THEN 'TRADE_SUCCESS' \
                WHEN seq % 100 < 65 THEN 'TRADE_FINISHED' \
                ELSE 'TRADE_CLOSED' END AS status, \
           CASE WHEN seq > {orders} OR seq % 100 < 65 THEN NULL \
                WHEN seq % 100 < 90 THEN 'pay_timeout' ELSE 'cancel' END AS closed_by, \
           IF(seq > {orders}, NOW(6) - INTERVAL ({total} + 1 - seq) * 100000 MICROSECOND, \
              NOW(6) - INTERVAL 2400 SECOND - INTERVAL ({orders} + 1 - seq) * {step_us} MICROSECOND) \
             AS created, \
           1 + (seq * 7919) % {goods} AS g1, 1 + seq % 3 AS n1, \
           IF(seq % 3 = 0, NULL, 1 + ((seq * 7919) % {goods} + 1 + seq % ({goods} - 1)) % {goods}) AS g2, \
           1 + seq % 2 AS n2, \
           seq > {orders} AS recent \
         FROM {numbers}) h",
        numbers = numbers(from, to),
    )
}

/// The numbers `from..=to` (at most [`CHUNK`] of them) as a derived table of one column,
/// `seq`, from a cross join of digits: portable to MySQL 8, which has no MariaDB
/// `seq_1_to_N` tables.
fn numbers(from: u64, to: u64) -> String {
    let digits = (0..10)
        .map(|d| format!("SELECT {d} AS d"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let offset = "d0.d + 10 * d1.d + 100 * d2.d + 1000 * d3.d + 10000 * d4.d";
    let joined = (0..5)
        .map(|i| format!("({digits}) d{i}"))
        .collect::<Vec<_>>()
        .join(" CROSS JOIN ");
    format!(
        "(SELECT {from} + {offset} AS seq FROM {joined} WHERE {offset} <= {span}) n",
        span = to.saturating_sub(from)
    )
}

/// order_info, order_goods and tx_barrier rows of a chunk.
fn order_statements(rows: &str) -> Vec<String> {
    let price = |g: &str| format!("(100 + {g} % 500)");
    vec![
        format!(
            "INSERT INTO order_info (id, order_sn, user_id, status, total_cents, address, name, \
               mobile, pay_type, trade_no, pay_time, created_at, updated_at, request_id, \
               closed_by, closed_at) \
             SELECT seq, sn, user_id, status, \
               n1 * {p1} + IF(g2 IS NULL, 0, n2 * {p2}), '1 History Lane', 'History', \
               '13800000000', IF(status IN ('TRADE_SUCCESS', 'TRADE_FINISHED'), 'alipay', ''), \
               IF(status IN ('TRADE_SUCCESS', 'TRADE_FINISHED'), CONCAT('t', seq), ''), \
               IF(status IN ('TRADE_SUCCESS', 'TRADE_FINISHED'), \
                 IF(recent, created, created + INTERVAL 5 MINUTE), NULL), \
               created, created, CONCAT('req-', seq), closed_by, \
               IF(closed_by IS NULL, NULL, created + INTERVAL 30 MINUTE) \
             FROM {rows}",
            p1 = price("g1"),
            p2 = price("g2"),
        ),
        format!(
            "INSERT INTO order_goods (order_id, goods_id, goods_name, price_cents, nums) \
             SELECT seq, g1, CONCAT('goods ', g1), {p1}, n1 FROM {rows} \
             UNION ALL \
             SELECT seq, g2, CONCAT('goods ', g2), {p2}, n2 FROM {rows} WHERE g2 IS NOT NULL",
            p1 = price("g1"),
            p2 = price("g2"),
        ),
        format!(
            "INSERT INTO tx_barrier (order_sn, outcome, created_at) \
             SELECT sn, 'committed', created FROM {rows} \
             UNION ALL \
             SELECT CONCAT(sn, 'x'), 'aborted', created FROM {rows} \
               WHERE recent = 0 AND seq % 50 = 0"
        ),
    ]
}

/// stock_sell_detail rows of a chunk: the orders' deductions and the tombstones of the
/// never-placed ones.
fn inventory_statements(rows: &str) -> Vec<String> {
    vec![format!(
        "INSERT INTO stock_sell_detail \
           (order_sn, status, detail, created_at, updated_at, confirmed_at) \
         SELECT sn, IF(status = 'TRADE_CLOSED', 'RETURNED', 'DEDUCTED'), \
           CONCAT('[{{\"goods_id\":', g1, ',\"num\":', n1, '}}', \
             IF(g2 IS NULL, '', CONCAT(',{{\"goods_id\":', g2, ',\"num\":', n2, '}}')), ']'), \
           created, IF(status = 'TRADE_CLOSED', created + INTERVAL 30 MINUTE, created), \
           IF(recent = 0 AND status <> 'TRADE_CLOSED', created + INTERVAL 20 MINUTE, NULL) \
         FROM {rows} \
         UNION ALL \
         SELECT CONCAT(sn, 'x'), 'RETURNED', '[]', created, created, NULL \
         FROM {rows} WHERE recent = 0 AND seq % 50 = 0"
    )]
}

/// Latencies of one probe, in ms.
#[derive(Debug, Default)]
pub struct Probe {
    pub name: &'static str,
    pub calls: usize,
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Probe {
    fn of(name: &'static str, mut latencies: Vec<Duration>, failed: usize) -> Self {
        latencies.sort();
        let at = |q: f64| ms(percentile(&latencies, q));
        Self {
            name,
            calls: latencies.len(),
            failed,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "probe": self.name, "calls": self.calls, "failed": self.failed,
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms,
        })
    }
}

/// Times `call` once per item, one at a time.
async fn time_each<T, F, Fut>(name: &'static str, items: Vec<T>, mut call: F) -> Probe
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut latencies = Vec::with_capacity(items.len());
    let mut failed = 0;
    for item in items {
        let t = Instant::now();
        match call(item).await {
            Ok(()) => latencies.push(t.elapsed()),
            Err(e) => {
                if failed == 0 {
                    eprintln!("probe {name}: {e:#}");
                }
                failed += 1;
            }
        }
    }
    Probe::of(name, latencies, failed)
}

/// Runs the probes against the services' databases and order_srv (after the scenarios).
pub async fn probe(
    history: &History,
    order_db: &MySqlPool,
    inventory_db: &MySqlPool,
    orders: &OrderClient<Channel>,
) -> anyhow::Result<Vec<Probe>> {
    let total = history.orders + RECENT;
    // Spread over the whole history: every (total / PROBES)-th order, all committed.
    let stride = (total / PROBES as u64).max(1);
    let committed: Vec<String> = (0..PROBES as u64)
        .map(|i| format!("h{}", (1 + i * stride).min(total)))
        .collect();
    // The recent unpaid orders (even seq numbers past the history).
    let unpaid: Vec<String> = (history.orders + 1..=total)
        .filter(|seq| seq % 2 == 0)
        .take(PROBES)
        .map(|seq| format!("h{seq}"))
        .collect();
    let mut probes = Vec::new();
    probes.push(
        time_each("check-back barrier claim", committed, |sn| async move {
            let mut conn = order_db.acquire().await?;
            order_srv::create_order::check_back::claim_barrier(&mut conn, &sn).await?;
            Ok(())
        })
        .await,
    );
    probes.push(
        time_each("pay-timeout close", unpaid.clone(), |sn| async move {
            let mut conn = order_db.acquire().await?;
            order_srv::db::order_by_sn(&mut conn, &sn).await?;
            let closed = order_srv::db::close_if_unpaid(
                &mut conn,
                &sn,
                order_srv::db::CloseCause::PayTimeout,
            )
            .await?;
            order_srv::db::order_by_sn(&mut conn, &sn).await?;
            anyhow::ensure!(closed, "{sn} was not unpaid");
            Ok(())
        })
        .await,
    );
    probes.push(
        time_each("reback (inventory)", unpaid, |sn| async move {
            let sn = inventory_srv::domain::OrderSn::parse(&sn)?;
            let outcome = inventory_srv::stock::reback(inventory_db, &sn).await?;
            anyhow::ensure!(
                outcome == inventory_srv::stock::RebackOutcome::Returned,
                "{sn}: {outcome:?}"
            );
            Ok(())
        })
        .await,
    );
    if history.heavy_orders > 0 {
        probes.extend(order_list(orders, history.heavy_orders).await?);
    }
    Ok(probes)
}

/// OrderList of the heavy buyer, 10 a page: every page once, then the first and the last
/// page 200 times each.
async fn order_list(orders: &OrderClient<Channel>, expected: u64) -> anyhow::Result<Vec<Probe>> {
    let mut client = orders.clone();
    let request = |page_token: String| pb::OrderListRequest {
        user_id: HEAVY_USER,
        page: 0,
        page_size: 10,
        page_token,
    };
    let mut every = Vec::new();
    let (mut token, mut seen) = (String::new(), 0u64);
    let last_token = loop {
        let t = Instant::now();
        let page = client
            .order_list(request(token.clone()))
            .await?
            .into_inner();
        every.push(t.elapsed());
        seen += page.orders.len() as u64;
        if page.next_page_token.is_empty() {
            break token;
        }
        token = page.next_page_token;
    };
    anyhow::ensure!(
        seen == expected,
        "the heavy buyer's pages held {seen} orders, not {expected}"
    );
    let mut probes = vec![Probe::of("OrderList, every page", every, 0)];
    for (name, token) in [
        ("OrderList, first page", String::new()),
        ("OrderList, last page", last_token),
    ] {
        let pages = vec![token; 200];
        let client = &client;
        probes.push(
            time_each(name, pages, |token| async move {
                client.clone().order_list(request(token)).await?;
                Ok(())
            })
            .await,
        );
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heavy_buyer_holds_a_tenth_up_to_100_000() {
        assert_eq!(heavy_orders(0), 0);
        assert_eq!(heavy_orders(50_000), 5_000);
        assert_eq!(heavy_orders(1_000_000), 100_000);
        assert_eq!(heavy_orders(5_000_000), 100_000);
    }
}
