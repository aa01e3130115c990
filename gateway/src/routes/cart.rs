//! The caller's cart: `/v1/cart/items` (list, add) and `/v1/cart/items/{goods_id}`
//! (change, remove). The cart is always the token's user's.

use axum::{Json, extract::State, http::StatusCode};
use proto::order as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::Buyer,
    backends::within,
    extract::{Json as Body, Path, integer},
    problem::Problem,
    startup::AppState,
};

/// One line of the cart.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CartLine {
    pub goods_id: i32,
    pub nums: i32,
    /// Checked lines are what `POST /v1/orders` orders.
    pub checked: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cart {
    pub items: Vec<CartLine>,
}

/// Adds `nums` of a goods (to its line, if there is one).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddToCart {
    #[serde(deserialize_with = "integer::i32")]
    #[schema(minimum = 1)]
    pub goods_id: i32,
    /// How many to add; the line holds at most 10,000 in all.
    #[serde(deserialize_with = "integer::i32")]
    #[schema(minimum = 1, maximum = 10000)]
    pub nums: i32,
    /// Absent: a new line is checked, an existing line keeps its flag.
    #[serde(default)]
    pub checked: Option<bool>,
}

/// Changes a line: its count, its flag, or both.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeCartLine {
    #[serde(default, deserialize_with = "integer::option_i32")]
    #[schema(minimum = 1, maximum = 10000)]
    pub nums: Option<i32>,
    #[serde(default)]
    pub checked: Option<bool>,
}

fn line(item: pb::CartItem) -> CartLine {
    CartLine {
        goods_id: item.goods_id,
        nums: item.nums,
        checked: item.checked,
    }
}

/// The caller's cart.
#[utoipa::path(
    get, path = "/v1/cart/items", tag = "cart",
    responses((status = 200, description = "The cart's lines", body = Cart)),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, buyer: Buyer) -> Result<Json<Cart>, Problem> {
    let items = state
        .backends
        .order
        .clone()
        .cart_item_list(within(
            pb::UserRequest {
                user_id: buyer.user_id,
            },
            state.budgets.call,
        ))
        .await?
        .into_inner()
        .items;
    Ok(Json(Cart {
        items: items.into_iter().map(line).collect(),
    }))
}

/// Adds goods to the caller's cart.
#[utoipa::path(
    post, path = "/v1/cart/items", tag = "cart",
    request_body = AddToCart,
    responses(
        (status = 201, description = "The line as it is now", body = CartLine),
        (status = 404, description = "GOODS_NOT_FOUND: not on the price list", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "CART_LINE_LIMIT, CART_FULL; CONCURRENT_CHANGE (retry)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn add(
    State(state): State<AppState>,
    buyer: Buyer,
    Body(body): Body<AddToCart>,
) -> Result<(StatusCode, Json<CartLine>), Problem> {
    let item = state
        .backends
        .order
        .clone()
        .create_cart_item(within(
            pb::CreateCartItemRequest {
                user_id: buyer.user_id,
                goods_id: body.goods_id,
                nums: body.nums,
                checked: body.checked,
            },
            state.budgets.call,
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(line(item))))
}

/// Changes a line of the caller's cart.
#[utoipa::path(
    patch, path = "/v1/cart/items/{goods_id}", tag = "cart",
    params(("goods_id" = i32, Path, minimum = 1, description = "The goods of the line")),
    request_body = ChangeCartLine,
    responses(
        (status = 200, description = "The line as it is now", body = CartLine),
        (status = 404, description = "NOT_IN_CART", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "CART_LINE_LIMIT", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn change(
    State(state): State<AppState>,
    buyer: Buyer,
    Path(goods_id): Path<i32>,
    Body(body): Body<ChangeCartLine>,
) -> Result<Json<CartLine>, Problem> {
    let item = state
        .backends
        .order
        .clone()
        .update_cart_item(within(
            pb::UpdateCartItemRequest {
                user_id: buyer.user_id,
                goods_id,
                nums: body.nums,
                checked: body.checked,
            },
            state.budgets.call,
        ))
        .await?
        .into_inner();
    Ok(Json(line(item)))
}

/// Removes a line from the caller's cart.
#[utoipa::path(
    delete, path = "/v1/cart/items/{goods_id}", tag = "cart",
    params(("goods_id" = i32, Path, minimum = 1, description = "The goods of the line")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "NOT_IN_CART", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    buyer: Buyer,
    Path(goods_id): Path<i32>,
) -> Result<StatusCode, Problem> {
    state
        .backends
        .order
        .clone()
        .delete_cart_item(within(
            pb::DeleteCartItemRequest {
                user_id: buyer.user_id,
                goods_id,
            },
            state.budgets.call,
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
