//! The inventory rules: Sell and Reback, each one MySQL transaction keyed by order_sn.
//!
//! Sell writes the order's `stock_sell_detail` row *first*. That row is the order's
//! lock and idempotency key: a retried Sell finds it DEDUCTED and succeeds without
//! deducting twice; a Sell that finds it RETURNED (a reback got there first) is refused,
//! so stock returned for an order can never be taken again by that order.
//!
//! Connections run at READ COMMITTED (`service_db::connect` sets it on every connection): locking reads and conditional
//! updates always see the latest committed rows, and no gap locks are taken, so two
//! rebacks of an unknown order cannot deadlock on the tombstone insert.

use sqlx::{MySqlConnection, MySqlPool};

use crate::{
    db,
    domain::{OrderSn, SellLine, SellLines, SellOrder, SellStatus, StockLevel},
    error::{Error, Result},
};

/// Attempts per transaction when MySQL picks it as a deadlock victim.
const DEADLOCK_ATTEMPTS: usize = 5;

/// What a successful Sell did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SellOutcome {
    Deducted,
    /// The same order with the same items had already been deducted.
    AlreadyDeducted,
}

/// What a Reback did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebackOutcome {
    Returned,
    AlreadyReturned,
    /// No Sell was ever recorded: a tombstone now refuses a late one.
    Tombstoned,
}

/// Deducts the stock of one order, all or nothing.
#[tracing::instrument(skip_all, fields(order_sn = %order.order_sn))]
pub async fn sell(pool: &MySqlPool, order: &SellOrder) -> Result<SellOutcome> {
    with_deadlock_retry(|| async {
        let mut tx = pool.begin().await?;
        let outcome = sell_in(&mut tx, order).await?;
        if outcome == SellOutcome::Deducted {
            tx.commit().await?;
        }
        Ok(outcome)
    })
    .await
}

async fn sell_in(conn: &mut MySqlConnection, order: &SellOrder) -> Result<SellOutcome> {
    let detail = order.lines.to_json();
    if !db::insert_sell_detail(conn, &order.order_sn, SellStatus::Deducted, &detail).await? {
        return already_sold(conn, order).await;
    }
    for line in order.lines.lines() {
        if !db::deduct_stock(conn, line.goods_id, line.num).await? {
            // Dropping the transaction rolls back the detail row and earlier deductions.
            return Err(match db::stock_of(conn, line.goods_id).await? {
                None => Error::GoodsNotFound(line.goods_id),
                Some(available) => Error::InsufficientStock {
                    goods_id: line.goods_id,
                    wanted: line.num,
                    available,
                },
            });
        }
    }
    Ok(SellOutcome::Deducted)
}

/// The order_sn already has a detail row: a retry, a conflict, or a tombstone.
async fn already_sold(conn: &mut MySqlConnection, order: &SellOrder) -> Result<SellOutcome> {
    // The insert waited for the other writer to commit, so a plain read sees its row.
    let row = db::find_sell_detail(conn, &order.order_sn)
        .await?
        // The row blocked our insert, so it exists unless it was deleted since.
        .ok_or_else(|| Error::Conflict("the sell detail vanished during Sell".into()))?;
    match parse_status(&order.order_sn, &row.status)? {
        SellStatus::Returned => Err(Error::AlreadyReturned(order.order_sn.to_string())),
        SellStatus::Deducted => {
            let stored = parse_detail(&order.order_sn, &row.detail)?;
            if stored == order.lines.lines() {
                Ok(SellOutcome::AlreadyDeducted)
            } else {
                Err(Error::ConflictingSell(order.order_sn.to_string()))
            }
        }
    }
}

/// Gives back the stock of one order; idempotent, and safe before its Sell.
#[tracing::instrument(skip_all, fields(order_sn = %order_sn))]
pub async fn reback(pool: &MySqlPool, order_sn: &OrderSn) -> Result<RebackOutcome> {
    with_deadlock_retry(|| async {
        // A lost insert race means the row exists on the next read, so the second round
        // finds it; the third is for a row purged in between.
        for _ in 0..3 {
            let mut tx = pool.begin().await?;
            let Some(row) = db::lock_sell_detail(&mut tx, order_sn).await? else {
                if db::insert_sell_detail(&mut tx, order_sn, SellStatus::Returned, "[]").await? {
                    tx.commit().await?;
                    return Ok(RebackOutcome::Tombstoned);
                }
                // A Sell or another reback inserted the row meanwhile: look again.
                continue;
            };
            return match parse_status(order_sn, &row.status)? {
                SellStatus::Returned => Ok(RebackOutcome::AlreadyReturned),
                SellStatus::Deducted => {
                    for line in parse_detail(order_sn, &row.detail)? {
                        db::add_stock(&mut tx, line.goods_id, line.num).await?;
                    }
                    db::mark_returned(&mut tx, order_sn).await?;
                    tx.commit().await?;
                    Ok(RebackOutcome::Returned)
                }
            };
        }
        Err(Error::Conflict(
            "the sell detail keeps vanishing during reback".into(),
        ))
    })
    .await
}

/// Settles paid orders' deductions confirmed more than `after` ago, `batch` rows per
/// transaction: each batch adds its lines to `stock_settled` and deletes its detail rows,
/// so stock_sell_detail stays bounded while I1 keeps holding (see the migration). Safe
/// because a paid order is never closed (no reback will look for the row) and `after` is
/// far beyond any Sell still in flight for it. `settled` is told each batch as it
/// commits; returns the rows settled. A detail that cannot be read is left in place (and
/// in I1's sum) for an operator, and the round moves past it.
pub async fn settle(
    pool: &MySqlPool,
    after: std::time::Duration,
    batch: u32,
    mut settled: impl FnMut(u64),
) -> Result<u64> {
    let mut total = 0u64;
    // Before any confirmation (1970).
    let mut from = (chrono::NaiveDateTime::default(), 0);
    loop {
        let done = with_deadlock_retry(|| settle_batch(pool, after, from, batch)).await?;
        settled(done.settled);
        total = total.saturating_add(done.settled);
        match done.last {
            Some(last) if done.seen >= batch as usize => from = last,
            _ => return Ok(total),
        }
    }
}

/// What one settle transaction did.
struct SettleBatch {
    seen: usize,
    settled: u64,
    /// The last row looked at: where the next batch starts.
    last: Option<(chrono::NaiveDateTime, i64)>,
}

async fn settle_batch(
    pool: &MySqlPool,
    after: std::time::Duration,
    from: (chrono::NaiveDateTime, i64),
    batch: u32,
) -> Result<SettleBatch> {
    let mut tx = pool.begin().await?;
    let rows = db::lock_settle_candidates(&mut tx, after, from, batch).await?;
    let mut per_goods: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        match SellLines::from_json(&row.detail) {
            Ok(lines) => {
                for line in lines {
                    let (nums, orders) = per_goods.entry(line.goods_id).or_default();
                    *nums = nums.saturating_add(i64::from(line.num));
                    *orders = orders.saturating_add(1);
                }
                ids.push(row.id);
            }
            Err(e) => tracing::warn!(order_sn = %row.order_sn, error = %e,
                "a confirmed deduction's detail is unreadable; not settled"),
        }
    }
    // Ascending goods id, as every transaction here locks goods rows.
    for (goods_id, (nums, orders)) in per_goods {
        db::add_settled(&mut tx, goods_id, nums, orders).await?;
    }
    let settled = db::delete_details(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(SettleBatch {
        seen: rows.len(),
        settled,
        last: rows.last().map(|row| (row.confirmed_at, row.id)),
    })
}

/// Sets the absolute stock of one goods (admin), creating its row when missing.
pub async fn set_level(pool: &MySqlPool, level: &StockLevel) -> Result<()> {
    let mut conn = pool.acquire().await?;
    db::set_stock(&mut conn, level.goods_id, level.stocks).await?;
    Ok(())
}

/// The current stock of one goods.
pub async fn level_of(pool: &MySqlPool, goods_id: i32) -> Result<i64> {
    let mut conn = pool.acquire().await?;
    db::stock_of(&mut conn, goods_id)
        .await?
        .ok_or(Error::GoodsNotFound(goods_id))
}

/// The current stock of several goods; unknown ids are left out.
pub async fn levels_of(pool: &MySqlPool, goods_ids: &[i32]) -> Result<Vec<(i32, i64)>> {
    let mut conn = pool.acquire().await?;
    Ok(db::stocks_of(&mut conn, goods_ids).await?)
}

/// The stored status and lines of one order.
pub async fn sell_detail(
    pool: &MySqlPool,
    order_sn: &OrderSn,
) -> Result<(SellStatus, Vec<SellLine>)> {
    let mut conn = pool.acquire().await?;
    let row = db::find_sell_detail(&mut conn, order_sn)
        .await?
        .ok_or_else(|| Error::SellDetailNotFound(order_sn.to_string()))?;
    Ok((
        parse_status(order_sn, &row.status)?,
        parse_detail(order_sn, &row.detail)?,
    ))
}

fn parse_status(order_sn: &OrderSn, raw: &str) -> Result<SellStatus> {
    SellStatus::parse(raw).ok_or_else(|| Error::CorruptDetail {
        order_sn: order_sn.to_string(),
        reason: format!("unknown status {raw:?}"),
    })
}

fn parse_detail(order_sn: &OrderSn, raw: &str) -> Result<Vec<SellLine>> {
    SellLines::from_json(raw).map_err(|err| Error::CorruptDetail {
        order_sn: order_sn.to_string(),
        reason: err.to_string(),
    })
}

async fn with_deadlock_retry<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(Error::Database(err))
                if service_db::errors::is_deadlock(&err) && tries < DEADLOCK_ATTEMPTS =>
            {
                tracing::debug!(tries, "deadlock victim, retrying the transaction");
                tries += 1;
            }
            other => return other,
        }
    }
}
