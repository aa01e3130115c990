//! The shopping cart: one line per (user, goods), with a "checked" flag that selects
//! the lines the next CreateOrder takes.

use std::collections::HashMap;

use sqlx::{MySqlConnection, MySqlPool};

use crate::{
    db::{self, CartRow, OrderGoodsRow, PriceRow},
    domain::{MAX_CART_LINES, MAX_CART_NUMS},
    error::{Error, Reason, Result},
};

/// Adds goods to the cart; the goods must be on the price list. An existing line grows
/// by `nums`, up to [`MAX_CART_NUMS`] (the limit UpdateCartItem enforces too); a cart
/// holds at most [`MAX_CART_LINES`] goods. `checked`, when given, sets the line's flag
/// (as UpdateCartItem does); when absent, a new line is checked and an existing line
/// keeps its flag.
#[tracing::instrument(skip(pool))]
pub async fn add(
    pool: &MySqlPool,
    user_id: i64,
    goods_id: i32,
    nums: i32,
    checked: Option<bool>,
) -> Result<CartRow> {
    let mut tx = pool.begin().await?;
    if !db::goods_exists(&mut tx, goods_id).await? {
        return Err(Error::NotFound(
            Reason::GoodsNotFound,
            format!("goods {goods_id} not found"),
        ));
    }
    // Two rounds: a concurrent add may insert the line between our read and our insert;
    // its row is then visible (and lockable) on the second read.
    for _ in 0..2 {
        if let Some((held, _)) = db::lock_cart_line(&mut tx, user_id, goods_id).await? {
            let grown = held
                .checked_add(nums)
                .filter(|n| *n <= MAX_CART_NUMS)
                .ok_or_else(|| {
                    Error::FailedPrecondition(Reason::CartLineLimit, format!(
                        "goods {goods_id} is in the cart {held} times; adding {nums} would pass the limit of {MAX_CART_NUMS}"
                    ))
                })?;
            db::update_cart_line(&mut tx, user_id, goods_id, Some(grown), checked).await?;
            return commit_line(tx, user_id, goods_id).await;
        }
        if db::cart_line_count(&mut tx, user_id).await? >= MAX_CART_LINES {
            return Err(Error::FailedPrecondition(
                Reason::CartFull,
                format!("the cart already holds {MAX_CART_LINES} different goods"),
            ));
        }
        if db::insert_cart_line(&mut tx, user_id, goods_id, nums, checked.unwrap_or(true)).await? {
            return commit_line(tx, user_id, goods_id).await;
        }
    }
    Err(Error::Aborted(
        Reason::ConcurrentChange,
        format!("cart line of goods {goods_id} changed concurrently; retry"),
    ))
}

async fn commit_line(
    mut tx: sqlx::Transaction<'_, sqlx::MySql>,
    user_id: i64,
    goods_id: i32,
) -> Result<CartRow> {
    let row = line(&mut tx, user_id, goods_id).await?;
    tx.commit().await?;
    Ok(row)
}

/// The user's cart, by goods id.
pub async fn list(pool: &MySqlPool, user_id: i64) -> Result<Vec<CartRow>> {
    let mut conn = pool.acquire().await?;
    Ok(db::cart_of(&mut conn, user_id).await?)
}

#[tracing::instrument(skip(pool))]
pub async fn update(
    pool: &MySqlPool,
    user_id: i64,
    goods_id: i32,
    nums: Option<i32>,
    checked: Option<bool>,
) -> Result<CartRow> {
    let mut conn = pool.acquire().await?;
    db::update_cart_line(&mut conn, user_id, goods_id, nums, checked).await?;
    line(&mut conn, user_id, goods_id).await
}

#[tracing::instrument(skip(pool))]
pub async fn delete(pool: &MySqlPool, user_id: i64, goods_id: i32) -> Result<()> {
    let mut conn = pool.acquire().await?;
    if !db::delete_cart_line(&mut conn, user_id, goods_id).await? {
        return Err(not_in_cart(goods_id));
    }
    Ok(())
}

async fn line(conn: &mut sqlx::MySqlConnection, user_id: i64, goods_id: i32) -> Result<CartRow> {
    db::cart_line(conn, user_id, goods_id)
        .await?
        .ok_or_else(|| not_in_cart(goods_id))
}

fn not_in_cart(goods_id: i32) -> Error {
    Error::NotFound(
        Reason::NotInCart,
        format!("goods {goods_id} is not in the cart"),
    )
}

/// Steps 4.1-4.2: the user's checked cart lines, claimed for this order, priced from the
/// server's price list.
///
/// The claim is a row lock on the cart lines (`FOR UPDATE NOWAIT`) taken in the order's
/// own transaction: it lasts until that transaction commits (the lines are deleted) or
/// ends otherwise (the lines are free again), and it dies with the connection when the
/// process does, so there is never a claim to clean up. A second CreateOrder of the same
/// cart meets the lock and fails at once with ABORTED, before it has deducted anything.
pub async fn claim_priced_cart(
    tx: &mut MySqlConnection,
    user_id: i64,
) -> Result<Vec<OrderGoodsRow>> {
    let cart = match db::lock_checked_cart(tx, user_id).await {
        Ok(cart) => cart,
        Err(e) if service_db::errors::is_lock_not_granted(&e) => {
            return Err(Error::Aborted(
                Reason::CartInUse,
                "the cart is being ordered by a concurrent request; retry to see its outcome"
                    .into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if cart.is_empty() {
        return Err(Error::FailedPrecondition(
            Reason::CartEmpty,
            "no checked items in the cart".into(),
        ));
    }
    if i64::try_from(cart.len()).map_or(true, |n| n > MAX_CART_LINES) {
        return Err(Error::FailedPrecondition(
            Reason::CartFull,
            format!("an order may hold at most {MAX_CART_LINES} different goods"),
        ));
    }
    let goods_ids: Vec<i32> = cart.iter().map(|(goods_id, _)| *goods_id).collect();
    let mut prices: HashMap<i32, PriceRow> = db::prices_of(tx, &goods_ids)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    cart.into_iter()
        .map(|(goods_id, nums)| {
            let price = prices.remove(&goods_id).ok_or_else(|| {
                Error::NotFound(Reason::GoodsNotFound, format!("goods {goods_id} not found"))
            })?;
            Ok(OrderGoodsRow {
                goods_id,
                goods_name: price.name,
                price_cents: price.price_cents,
                nums,
            })
        })
        .collect()
}
