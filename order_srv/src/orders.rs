//! Reading orders and moving them through the payment states.

use sqlx::MySqlPool;

use crate::{
    db::{self, OrderGoodsRow, OrderRow, PriceRow},
    domain::{self, GoodsPage, GoodsPrice, Page, StatusChange},
    error::{Error, Reason, Result},
};

/// Applies a payment/fulfilment transition, conditionally in one UPDATE so that it
/// races the pay-timeout close safely: exactly one of them moves the order out of
/// WAIT_BUYER_PAY. Repeating a transition that already happened succeeds (payment
/// callbacks are retried by gateways); a closed order is never reopened.
#[tracing::instrument(skip_all, fields(order_sn = %change.order_sn, to = change.to.as_str()))]
pub async fn update_status(pool: &MySqlPool, change: &StatusChange) -> Result<OrderRow> {
    let mut conn = pool.acquire().await?;
    db::transition_status(
        &mut conn,
        &change.order_sn,
        change.to.allowed_sources(),
        change.to,
        &change.pay_type,
        &change.trade_no,
    )
    .await?;
    let order = db::order_by_sn(&mut conn, &change.order_sn)
        .await?
        .ok_or_else(|| {
            Error::NotFound(
                Reason::OrderNotFound,
                format!("order {} not found", change.order_sn),
            )
        })?;
    let current = order.status;
    if current != change.to {
        return Err(Error::FailedPrecondition(
            Reason::OrderStatus,
            format!(
                "order {} is {}; it cannot become {}",
                order.order_sn,
                current.as_str(),
                change.to.as_str()
            ),
        ));
    }
    Ok(order)
}

/// One order with its goods; `user_id > 0` also checks ownership.
pub async fn detail(
    pool: &MySqlPool,
    order_sn: &str,
    user_id: i64,
) -> Result<(OrderRow, Vec<OrderGoodsRow>)> {
    let mut conn = pool.acquire().await?;
    let order = db::order_by_sn(&mut conn, order_sn)
        .await?
        .filter(|o| user_id <= 0 || o.user_id == user_id)
        .ok_or_else(|| {
            Error::NotFound(Reason::OrderNotFound, format!("order {order_sn} not found"))
        })?;
    let goods = db::goods_of_order(&mut conn, order.id).await?;
    Ok((order, goods))
}

/// One page of a user's orders, newest first.
pub struct OrderPage {
    pub orders: Vec<OrderRow>,
    /// How many orders the user has, counted up to [`COUNT_UP_TO`].
    pub total: u64,
    /// Counting stopped at [`COUNT_UP_TO`]: the user has more.
    pub total_is_lower_bound: bool,
    /// The token of the page after this one; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// How far a list's total is counted.
pub const COUNT_UP_TO: u64 = 10_000;

/// One page of a user's orders and how many orders the user has (up to [`COUNT_UP_TO`]).
pub async fn list(pool: &MySqlPool, user_id: i64, page: Page) -> Result<OrderPage> {
    let mut conn = pool.acquire().await?;
    let counted = db::count_orders_of_user(&mut conn, user_id, COUNT_UP_TO + 1).await?;
    // One order more than the page tells whether there is a next page.
    let mut orders =
        db::orders_of_user(&mut conn, user_id, u64::from(page.limit) + 1, page.start).await?;
    let more = orders.len() > page.limit as usize;
    orders.truncate(page.limit as usize);
    let next_page_token = orders
        .last()
        .filter(|_| more)
        .map(|last| domain::page_token(user_id, last.created_at, last.id));
    // COUNT(*) is never negative.
    let counted = u64::try_from(counted).unwrap_or(0);
    Ok(OrderPage {
        orders,
        total: counted.min(COUNT_UP_TO),
        total_is_lower_bound: counted > COUNT_UP_TO,
        next_page_token,
    })
}

/// One page of the price list: the goods after `page.after`, and the token of the next
/// page when there may be one.
pub async fn goods_page(
    pool: &MySqlPool,
    page: GoodsPage,
) -> Result<(Vec<PriceRow>, Option<String>)> {
    let mut conn = pool.acquire().await?;
    let goods = db::goods_page(&mut conn, page.after, page.size).await?;
    let full = u32::try_from(goods.len()).is_ok_and(|n| n == page.size);
    let next = goods
        .last()
        .filter(|_| full)
        .map(|last| last.id.to_string());
    Ok((goods, next))
}

/// Creates or changes a goods on the server-side price list.
pub async fn upsert_goods(pool: &MySqlPool, goods: &GoodsPrice) -> Result<()> {
    let mut conn = pool.acquire().await?;
    db::upsert_goods(&mut conn, goods).await?;
    Ok(())
}
