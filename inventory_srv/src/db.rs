//! One query per function; the caller owns the connection and so the transaction.

use service_db::ResultExt;
use sqlx::{FromRow, MySqlConnection};

use crate::domain::{OrderSn, SellStatus};

/// A `stock_sell_detail` row as stored.
#[derive(Debug, FromRow)]
pub struct SellDetailRow {
    pub status: String,
    pub detail: String,
}

/// Inserts a detail row; `Ok(false)` when the order_sn already has one.
#[tracing::instrument(skip_all, fields(order_sn = %order_sn))]
pub async fn insert_sell_detail(
    conn: &mut MySqlConnection,
    order_sn: &OrderSn,
    status: SellStatus,
    detail_json: &str,
) -> sqlx::Result<bool> {
    let inserted =
        sqlx::query("INSERT INTO stock_sell_detail (order_sn, status, detail) VALUES (?, ?, ?)")
            .bind(order_sn.as_str())
            .bind(status.as_str())
            .bind(detail_json)
            .execute(conn)
            .await
            .on_duplicate_key()?;
    Ok(inserted.is_some())
}

/// Reads and row-locks the detail of one order (the latest committed version).
#[tracing::instrument(skip_all, fields(order_sn = %order_sn))]
pub async fn lock_sell_detail(
    conn: &mut MySqlConnection,
    order_sn: &OrderSn,
) -> sqlx::Result<Option<SellDetailRow>> {
    sqlx::query_as("SELECT status, detail FROM stock_sell_detail WHERE order_sn = ? FOR UPDATE")
        .bind(order_sn.as_str())
        .fetch_optional(conn)
        .await
}

/// Reads the detail of one order without locking.
pub async fn find_sell_detail(
    conn: &mut MySqlConnection,
    order_sn: &OrderSn,
) -> sqlx::Result<Option<SellDetailRow>> {
    sqlx::query_as("SELECT status, detail FROM stock_sell_detail WHERE order_sn = ?")
        .bind(order_sn.as_str())
        .fetch_optional(conn)
        .await
}

#[tracing::instrument(skip_all, fields(order_sn = %order_sn))]
pub async fn mark_returned(conn: &mut MySqlConnection, order_sn: &OrderSn) -> sqlx::Result<()> {
    sqlx::query("UPDATE stock_sell_detail SET status = 'RETURNED' WHERE order_sn = ?")
        .bind(order_sn.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes `num` out of one goods if that much is there; `false` when it is not (or the
/// goods is unknown). The condition in the WHERE clause is what prevents oversell.
pub async fn deduct_stock(
    conn: &mut MySqlConnection,
    goods_id: i32,
    num: i32,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE inventory SET stocks = stocks - ?, version = version + 1 \
         WHERE goods_id = ? AND stocks >= ?",
    )
    .bind(num)
    .bind(goods_id)
    .bind(num)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn add_stock(conn: &mut MySqlConnection, goods_id: i32, num: i32) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE inventory SET stocks = stocks + ?, version = version + 1 WHERE goods_id = ?",
    )
    .bind(num)
    .bind(goods_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn stock_of(conn: &mut MySqlConnection, goods_id: i32) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT stocks FROM inventory WHERE goods_id = ?")
        .bind(goods_id)
        .fetch_optional(conn)
        .await
}

/// Stocks of several goods; unknown ids are absent from the result.
pub async fn stocks_of(
    conn: &mut MySqlConnection,
    goods_ids: &[i32],
) -> sqlx::Result<Vec<(i32, i64)>> {
    if goods_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; goods_ids.len()].join(",");
    let sql = format!(
        "SELECT goods_id, stocks FROM inventory WHERE goods_id IN ({placeholders}) ORDER BY goods_id"
    );
    let mut query = sqlx::query_as::<_, (i32, i64)>(&sql);
    for id in goods_ids {
        query = query.bind(id);
    }
    query.fetch_all(conn).await
}

/// Sets the absolute stock of one goods, creating its row when missing.
pub async fn set_stock(conn: &mut MySqlConnection, goods_id: i32, stocks: i32) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO inventory (goods_id, stocks) VALUES (?, ?) \
         ON DUPLICATE KEY UPDATE stocks = VALUES(stocks), version = version + 1",
    )
    .bind(goods_id)
    .bind(stocks)
    .execute(conn)
    .await?;
    Ok(())
}

/// DEDUCTED details the reconciler should ask about: older than `horizon` by the
/// database's clock, not confirmed, and not deferred to later; oldest first.
pub async fn reconcile_candidates(
    conn: &mut MySqlConnection,
    horizon: std::time::Duration,
    limit: u32,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT order_sn FROM stock_sell_detail \
         WHERE status = 'DEDUCTED' AND confirmed_at IS NULL \
           AND created_at < NOW(6) - INTERVAL ? MICROSECOND \
           AND (ask_after IS NULL OR ask_after <= NOW(6)) \
         ORDER BY created_at LIMIT ?",
    )
    .bind(u64::try_from(horizon.as_micros()).unwrap_or(u64::MAX))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The order of this deduction was paid: it stays, and is never asked about again.
pub async fn confirm_deduction(conn: &mut MySqlConnection, order_sn: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE stock_sell_detail SET confirmed_at = NOW(6) \
         WHERE order_sn = ? AND status = 'DEDUCTED'",
    )
    .bind(order_sn)
    .execute(conn)
    .await?;
    Ok(())
}

/// The order of this deduction is unpaid: ask again no sooner than `after`.
pub async fn defer_deduction(
    conn: &mut MySqlConnection,
    order_sn: &str,
    after: std::time::Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE stock_sell_detail SET ask_after = NOW(6) + INTERVAL ? MICROSECOND \
         WHERE order_sn = ? AND status = 'DEDUCTED'",
    )
    .bind(u64::try_from(after.as_micros()).unwrap_or(u64::MAX))
    .bind(order_sn)
    .execute(conn)
    .await?;
    Ok(())
}

/// A confirmed deduction due to be settled.
#[derive(Debug, FromRow)]
pub struct ConfirmedRow {
    pub id: i64,
    pub order_sn: String,
    pub detail: String,
    pub confirmed_at: chrono::NaiveDateTime,
}

/// Up to `limit` deductions confirmed more than `after` ago and after `from` (the last
/// `(confirmed_at, id)` a round looked at), in that order (`idx_confirmed`, which ends in
/// the primary key, so the scan stops at `limit`), row-locked; rows another settler holds
/// are skipped, not waited for.
pub async fn lock_settle_candidates(
    conn: &mut MySqlConnection,
    after: std::time::Duration,
    from: (chrono::NaiveDateTime, i64),
    limit: u32,
) -> sqlx::Result<Vec<ConfirmedRow>> {
    sqlx::query_as(
        "SELECT id, order_sn, detail, confirmed_at FROM stock_sell_detail \
         WHERE confirmed_at < NOW(6) - INTERVAL ? MICROSECOND \
           AND (confirmed_at > ? OR (confirmed_at = ? AND id > ?)) AND status = 'DEDUCTED' \
         ORDER BY confirmed_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
    )
    .bind(u64::try_from(after.as_micros()).unwrap_or(u64::MAX))
    .bind(from.0)
    .bind(from.0)
    .bind(from.1)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Adds settled deductions of one goods: `nums` units over `orders` orders.
pub async fn add_settled(
    conn: &mut MySqlConnection,
    goods_id: i32,
    nums: i64,
    orders: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO stock_settled (goods_id, nums, orders) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE nums = nums + VALUES(nums), orders = orders + VALUES(orders)",
    )
    .bind(goods_id)
    .bind(nums)
    .bind(orders)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes detail rows by id (the ones a settle batch holds).
pub async fn delete_details(conn: &mut MySqlConnection, ids: &[i64]) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let placeholders = vec!["?"; ids.len()].join(",");
    let sql = format!("DELETE FROM stock_sell_detail WHERE id IN ({placeholders})");
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// RETURNED detail rows (tombstones and returned orders) not touched for the retention.
/// DEDUCTED rows are live deductions: only settling ([`crate::stock::settle`]) removes them.
pub const EXPIRED_RETURNED_DETAILS: service_db::Expiry = service_db::Expiry {
    what: "RETURNED details",
    delete_batch: "DELETE FROM stock_sell_detail \
                   WHERE status = 'RETURNED' AND updated_at < NOW(6) - INTERVAL ? SECOND LIMIT ?",
};
