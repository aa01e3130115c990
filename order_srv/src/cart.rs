//! The shopping cart: one line per (user, goods), with a "checked" flag that selects
//! the lines the next CreateOrder takes.

use sqlx::MySqlPool;

use crate::{
    db::{self, CartRow},
    error::{Error, Result},
};

/// Adds goods to the cart; the goods must be on the price list.
#[tracing::instrument(skip(pool))]
pub async fn add(
    pool: &MySqlPool,
    user_id: i64,
    goods_id: i32,
    nums: i32,
    checked: bool,
) -> Result<CartRow> {
    let mut conn = pool.acquire().await?;
    if !db::goods_exists(&mut conn, goods_id).await? {
        return Err(Error::NotFound(format!("goods {goods_id} not found")));
    }
    db::add_to_cart(&mut conn, user_id, goods_id, nums, checked).await?;
    line(&mut conn, user_id, goods_id).await
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
    Error::NotFound(format!("goods {goods_id} is not in the cart"))
}
