//! One query per function; the caller owns the connection and so the transaction.

use chrono::{DateTime, Utc};
use service_db::ResultExt;
use sqlx::{FromRow, MySqlConnection};

use crate::domain::{GoodsPrice, NewOrder, OrderStatus, PageStart};

#[derive(Debug, Clone, FromRow)]
pub struct CartRow {
    pub id: i64,
    pub user_id: i64,
    pub goods_id: i32,
    pub nums: i32,
    pub checked: bool,
}

/// A goods on the server-side price list.
#[derive(Debug, Clone, FromRow)]
pub struct PriceRow {
    pub id: i32,
    pub name: String,
    pub price_cents: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct OrderRow {
    pub id: i64,
    pub order_sn: String,
    pub user_id: i64,
    pub status: OrderStatus,
    pub total_cents: i64,
    pub address: String,
    pub name: String,
    pub mobile: String,
    pub post: String,
    pub pay_type: String,
    pub trade_no: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct OrderGoodsRow {
    pub goods_id: i32,
    pub goods_name: String,
    pub price_cents: i64,
    pub nums: i32,
}

pub async fn upsert_goods(conn: &mut MySqlConnection, goods: &GoodsPrice) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO goods (id, name, price_cents) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE name = VALUES(name), price_cents = VALUES(price_cents)",
    )
    .bind(goods.id)
    .bind(&goods.name)
    .bind(goods.price_cents)
    .execute(conn)
    .await?;
    Ok(())
}

/// Up to `limit` goods of the price list with an id above `after`, by id.
pub async fn goods_page(
    conn: &mut MySqlConnection,
    after: i32,
    limit: u32,
) -> sqlx::Result<Vec<PriceRow>> {
    sqlx::query_as("SELECT id, name, price_cents FROM goods WHERE id > ? ORDER BY id LIMIT ?")
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await
}

pub async fn goods_exists(conn: &mut MySqlConnection, goods_id: i32) -> sqlx::Result<bool> {
    let found: Option<i32> = sqlx::query_scalar("SELECT id FROM goods WHERE id = ?")
        .bind(goods_id)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

pub async fn cart_of(conn: &mut MySqlConnection, user_id: i64) -> sqlx::Result<Vec<CartRow>> {
    sqlx::query_as(
        "SELECT id, user_id, goods_id, nums, checked FROM shopping_cart \
         WHERE user_id = ? ORDER BY goods_id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

pub async fn cart_line(
    conn: &mut MySqlConnection,
    user_id: i64,
    goods_id: i32,
) -> sqlx::Result<Option<CartRow>> {
    sqlx::query_as(
        "SELECT id, user_id, goods_id, nums, checked FROM shopping_cart \
         WHERE user_id = ? AND goods_id = ?",
    )
    .bind(user_id)
    .bind(goods_id)
    .fetch_optional(conn)
    .await
}

/// The quantity and flag of one cart line, row-locked until the caller's transaction ends.
pub async fn lock_cart_line(
    conn: &mut MySqlConnection,
    user_id: i64,
    goods_id: i32,
) -> sqlx::Result<Option<(i32, bool)>> {
    sqlx::query_as(
        "SELECT nums, checked FROM shopping_cart WHERE user_id = ? AND goods_id = ? FOR UPDATE",
    )
    .bind(user_id)
    .bind(goods_id)
    .fetch_optional(conn)
    .await
}

/// A new cart line; `Ok(false)` when the goods is already in the cart.
pub async fn insert_cart_line(
    conn: &mut MySqlConnection,
    user_id: i64,
    goods_id: i32,
    nums: i32,
    checked: bool,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO shopping_cart (user_id, goods_id, nums, checked) VALUES (?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind(goods_id)
    .bind(nums)
    .bind(checked)
    .execute(conn)
    .await
    .on_duplicate_key()?;
    Ok(inserted.is_some())
}

pub async fn update_cart_line(
    conn: &mut MySqlConnection,
    user_id: i64,
    goods_id: i32,
    nums: Option<i32>,
    checked: Option<bool>,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE shopping_cart SET nums = COALESCE(?, nums), checked = COALESCE(?, checked) \
         WHERE user_id = ? AND goods_id = ?",
    )
    .bind(nums)
    .bind(checked)
    .bind(user_id)
    .bind(goods_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

pub async fn delete_cart_line(
    conn: &mut MySqlConnection,
    user_id: i64,
    goods_id: i32,
) -> sqlx::Result<bool> {
    let result = sqlx::query("DELETE FROM shopping_cart WHERE user_id = ? AND goods_id = ?")
        .bind(user_id)
        .bind(goods_id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() > 0)
}

/// The user's checked cart lines as `(goods_id, nums)`, row-locked until the caller's
/// transaction ends. `NOWAIT`: when another transaction (a concurrent CreateOrder of the
/// same cart) holds one of them, this fails at once instead of waiting
/// ([`service_db::errors::is_lock_not_granted`]). The lock is on `shopping_cart` alone; prices are read
/// apart ([`prices_of`]) so that orders of the same goods by other users never collide.
pub async fn lock_checked_cart(
    conn: &mut MySqlConnection,
    user_id: i64,
) -> sqlx::Result<Vec<(i32, i32)>> {
    sqlx::query_as(
        "SELECT goods_id, nums FROM shopping_cart \
         WHERE user_id = ? AND checked ORDER BY goods_id FOR UPDATE NOWAIT",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// The price list entries of `goods_ids`; unknown ids are absent.
pub async fn prices_of(
    conn: &mut MySqlConnection,
    goods_ids: &[i32],
) -> sqlx::Result<Vec<PriceRow>> {
    if goods_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; goods_ids.len()].join(",");
    let sql = format!("SELECT id, name, price_cents FROM goods WHERE id IN ({placeholders})");
    let mut query = sqlx::query_as(&sql);
    for id in goods_ids {
        query = query.bind(id);
    }
    query.fetch_all(conn).await
}

/// How many lines the user's cart has.
pub async fn cart_line_count(conn: &mut MySqlConnection, user_id: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM shopping_cart WHERE user_id = ?")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// Deletes the ordered cart lines; returns how many were still there.
pub async fn delete_ordered_cart_lines(
    conn: &mut MySqlConnection,
    user_id: i64,
    goods_ids: &[i32],
) -> sqlx::Result<u64> {
    if goods_ids.is_empty() {
        return Ok(0);
    }
    let placeholders = vec!["?"; goods_ids.len()].join(",");
    let sql = format!(
        "DELETE FROM shopping_cart WHERE user_id = ? AND checked AND goods_id IN ({placeholders})"
    );
    let mut query = sqlx::query(&sql).bind(user_id);
    for id in goods_ids {
        query = query.bind(id);
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// The local transaction's barrier row. `Ok(false)`: a check-back (or a pay timeout that
/// came first) already decided "aborted" for this order, so the order must not be written.
#[tracing::instrument(skip_all, fields(order_sn = %order_sn))]
pub async fn insert_committed_barrier(
    conn: &mut MySqlConnection,
    order_sn: &str,
) -> sqlx::Result<bool> {
    let inserted =
        sqlx::query("INSERT INTO tx_barrier (order_sn, outcome) VALUES (?, 'committed')")
            .bind(order_sn)
            .execute(conn)
            .await
            .on_duplicate_key()?;
    Ok(inserted.is_some())
}

/// The check-back's barrier (also claimed by a pay timeout that finds no order): claims
/// "aborted" unless a row is already there. When the local transaction holds an
/// uncommitted 'committed' row, this waits for it.
#[tracing::instrument(skip_all, fields(order_sn = %order_sn))]
pub async fn insert_aborted_barrier_if_absent(
    conn: &mut MySqlConnection,
    order_sn: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT IGNORE INTO tx_barrier (order_sn, outcome) VALUES (?, 'aborted')")
        .bind(order_sn)
        .execute(conn)
        .await?;
    Ok(())
}

/// Who decided an order's fate in `tx_barrier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierOutcome {
    /// The local transaction inserted it: the order exists (once that transaction commits).
    Committed,
    /// A check-back (or a pay timeout) inserted it first: the order will never exist.
    Aborted,
}

impl BarrierOutcome {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "committed" => Some(Self::Committed),
            "aborted" => Some(Self::Aborted),
            _ => None,
        }
    }
}

/// The barrier row of an order, if any. The column's CHECK constraint admits only the two
/// outcomes; anything else is reported as a decode error.
pub async fn barrier_outcome(
    conn: &mut MySqlConnection,
    order_sn: &str,
) -> sqlx::Result<Option<BarrierOutcome>> {
    let raw: Option<String> =
        sqlx::query_scalar("SELECT outcome FROM tx_barrier WHERE order_sn = ?")
            .bind(order_sn)
            .fetch_optional(conn)
            .await?;
    raw.map(|raw| {
        BarrierOutcome::parse(&raw).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "outcome".into(),
            source: format!("unknown barrier outcome {raw:?}").into(),
        })
    })
    .transpose()
}

/// Inserts a new order, unpaid, and returns it as stored (its creation time is taken
/// here, to the microsecond the column keeps, so no read-back is needed).
pub async fn insert_order(
    conn: &mut MySqlConnection,
    order_sn: &str,
    order: &NewOrder,
    total_cents: i64,
) -> sqlx::Result<OrderRow> {
    let now = Utc::now();
    let created_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let status = OrderStatus::WaitBuyerPay;
    let result = sqlx::query(
        "INSERT INTO order_info \
         (order_sn, user_id, status, total_cents, address, name, mobile, post, created_at, \
          request_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(order_sn)
    .bind(order.user_id)
    .bind(status.as_str())
    .bind(total_cents)
    .bind(&order.address)
    .bind(&order.name)
    .bind(&order.mobile)
    .bind(&order.post)
    .bind(created_at)
    .bind(order.request_id.as_deref())
    .execute(conn)
    .await?;
    let id =
        i64::try_from(result.last_insert_id()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(OrderRow {
        id,
        order_sn: order_sn.to_owned(),
        user_id: order.user_id,
        status,
        total_cents,
        address: order.address.clone(),
        name: order.name.clone(),
        mobile: order.mobile.clone(),
        post: order.post.clone(),
        pay_type: String::new(),
        trade_no: String::new(),
        created_at,
    })
}

pub async fn insert_order_goods(
    conn: &mut MySqlConnection,
    order_id: i64,
    lines: &[OrderGoodsRow],
) -> sqlx::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let values = vec!["(?, ?, ?, ?, ?)"; lines.len()].join(",");
    let sql = format!(
        "INSERT INTO order_goods (order_id, goods_id, goods_name, price_cents, nums) VALUES {values}"
    );
    let mut query = sqlx::query(&sql);
    for line in lines {
        query = query
            .bind(order_id)
            .bind(line.goods_id)
            .bind(&line.goods_name)
            .bind(line.price_cents)
            .bind(line.nums);
    }
    query.execute(conn).await?;
    Ok(())
}

const ORDER_COLUMNS: &str = "id, order_sn, user_id, status, total_cents, address, name, mobile, \
                             post, pay_type, trade_no, created_at";

pub async fn order_by_sn(
    conn: &mut MySqlConnection,
    order_sn: &str,
) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM order_info WHERE order_sn = ?"
    ))
    .bind(order_sn)
    .fetch_optional(conn)
    .await
}

/// The order a user placed with an idempotency key, if any.
pub async fn order_by_request(
    conn: &mut MySqlConnection,
    user_id: i64,
    request_id: &str,
) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM order_info WHERE user_id = ? AND request_id = ?"
    ))
    .bind(user_id)
    .bind(request_id)
    .fetch_optional(conn)
    .await
}

/// Up to `limit` of a user's orders, newest first, from `start`. After an order, the
/// `idx_user_created` index (user_id, created_at, and the primary key) is entered right
/// where the page starts, so every page costs the same.
pub async fn orders_of_user(
    conn: &mut MySqlConnection,
    user_id: i64,
    limit: u64,
    start: PageStart,
) -> sqlx::Result<Vec<OrderRow>> {
    match start {
        PageStart::Offset(offset) => {
            sqlx::query_as(&format!(
                "SELECT {ORDER_COLUMNS} FROM order_info WHERE user_id = ? \
                 ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
            ))
            .bind(user_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(conn)
            .await
        }
        PageStart::After { created_at, id } => {
            sqlx::query_as(&format!(
                "SELECT {ORDER_COLUMNS} FROM order_info WHERE user_id = ? \
                 AND (created_at < ? OR (created_at = ? AND id < ?)) \
                 ORDER BY created_at DESC, id DESC LIMIT ?"
            ))
            .bind(user_id)
            .bind(created_at)
            .bind(created_at)
            .bind(id)
            .bind(limit)
            .fetch_all(conn)
            .await
        }
    }
}

/// How many orders a user has, counting at most `up_to` (a full count of a user with
/// 100,000 orders takes 9 ms, measured).
pub async fn count_orders_of_user(
    conn: &mut MySqlConnection,
    user_id: i64,
    up_to: u64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM order_info WHERE user_id = ? LIMIT ?) counted",
    )
    .bind(user_id)
    .bind(up_to)
    .fetch_one(conn)
    .await
}

pub async fn goods_of_order(
    conn: &mut MySqlConnection,
    order_id: i64,
) -> sqlx::Result<Vec<OrderGoodsRow>> {
    sqlx::query_as(
        "SELECT goods_id, goods_name, price_cents, nums FROM order_goods \
         WHERE order_id = ? ORDER BY goods_id",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}

/// Moves an order to `to` only from one of `from`; `false` when it was elsewhere.
pub async fn transition_status(
    conn: &mut MySqlConnection,
    order_sn: &str,
    from: &[OrderStatus],
    to: OrderStatus,
    pay_type: &str,
    trade_no: &str,
) -> sqlx::Result<bool> {
    if from.is_empty() {
        return Ok(false);
    }
    let placeholders = vec!["?"; from.len()].join(",");
    let sql = format!(
        "UPDATE order_info SET status = ?, \
           pay_type = IF(? = '', pay_type, ?), trade_no = IF(? = '', trade_no, ?), \
           pay_time = IF(? = 'TRADE_SUCCESS', UTC_TIMESTAMP(6), pay_time) \
         WHERE order_sn = ? AND status IN ({placeholders})"
    );
    let mut query = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(pay_type)
        .bind(pay_type)
        .bind(trade_no)
        .bind(trade_no)
        .bind(to.as_str())
        .bind(order_sn);
    for status in from {
        query = query.bind(status.as_str());
    }
    Ok(query.execute(conn).await?.rows_affected() == 1)
}

/// Who closed an unpaid order (`order_info.closed_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// Its delayed `order_timeout` message.
    PayTimeout,
    /// The buyer (CancelOrder).
    Cancel,
    /// The overdue-order sweep: its pay-timeout message was lost or late.
    Sweep,
}

impl CloseCause {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::PayTimeout => "pay_timeout",
            CloseCause::Cancel => "cancel",
            CloseCause::Sweep => "sweep",
        }
    }
}

/// Closes the order if it is still unpaid (the conditional close every closer shares);
/// `true` when this call closed it.
pub async fn close_if_unpaid(
    conn: &mut MySqlConnection,
    order_sn: &str,
    cause: CloseCause,
) -> sqlx::Result<bool> {
    let closed = sqlx::query(
        "UPDATE order_info SET status = 'TRADE_CLOSED', closed_by = ?, closed_at = NOW(6) \
         WHERE order_sn = ? AND status = 'WAIT_BUYER_PAY'",
    )
    .bind(cause.as_str())
    .bind(order_sn)
    .execute(conn)
    .await?;
    Ok(closed.rows_affected() == 1)
}

/// Up to `limit` unpaid orders placed more than `older_than` ago by the database's clock,
/// oldest first (index `idx_status_created`).
pub async fn overdue_unpaid(
    conn: &mut MySqlConnection,
    older_than: std::time::Duration,
    limit: u32,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT order_sn FROM order_info \
         WHERE status = 'WAIT_BUYER_PAY' AND created_at < NOW(6) - INTERVAL ? MICROSECOND \
         ORDER BY created_at LIMIT ?",
    )
    .bind(u64::try_from(older_than.as_micros()).unwrap_or(u64::MAX))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Barrier rows older than the retention (measured by the database's clock, the one that
/// wrote `created_at`).
pub const EXPIRED_BARRIERS: service_db::Expiry = service_db::Expiry {
    what: "tx_barrier rows",
    delete_batch: "DELETE FROM tx_barrier WHERE created_at < NOW(6) - INTERVAL ? SECOND LIMIT ?",
};
