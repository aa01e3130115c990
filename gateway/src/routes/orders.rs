//! The caller's orders: place one from the checked cart (`Idempotency-Key` → the
//! order's `request_id`, AIP-155), list them a page at a time, read one, cancel one.
//! Another buyer's order answers 404, exactly like one that does not exist.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use proto::order as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::Buyer,
    backends::within,
    extract::{Json as Body, Path, Query},
    problem::Problem,
    startup::AppState,
};

/// OrderDetail's owner for "whoever placed it" (the payment provider's callback).
pub const ANY_OWNER: i64 = 0;

/// The header that makes `POST /v1/orders` retry-safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// An order's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed, stock held, waiting for the payment (closed at the pay timeout).
    WaitBuyerPay,
    Paying,
    /// Paid.
    TradeSuccess,
    TradeFinished,
    /// Closed unpaid (cancelled or timed out); its stock went back.
    TradeClosed,
}

impl TryFrom<i32> for OrderStatus {
    type Error = Problem;

    fn try_from(raw: i32) -> Result<Self, Problem> {
        match pb::OrderStatus::try_from(raw) {
            Ok(pb::OrderStatus::WaitBuyerPay) => Ok(Self::WaitBuyerPay),
            Ok(pb::OrderStatus::Paying) => Ok(Self::Paying),
            Ok(pb::OrderStatus::TradeSuccess) => Ok(Self::TradeSuccess),
            Ok(pb::OrderStatus::TradeFinished) => Ok(Self::TradeFinished),
            Ok(pb::OrderStatus::TradeClosed) => Ok(Self::TradeClosed),
            Ok(pb::OrderStatus::Unspecified) | Err(_) => Err(Problem::from(
                tonic::Status::internal(format!("order_srv answered an order status {raw}")),
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub order_sn: String,
    pub status: OrderStatus,
    pub total_cents: i64,
    /// Where it goes: what it was placed with.
    pub delivery: Delivery,
    /// Set once paid.
    pub pay_type: String,
    pub trade_no: String,
    /// RFC 3339.
    pub created_at: String,
}

/// An order as order_srv answered it; a status the gateway does not know is an internal
/// error (never shown as something it is not).
impl TryFrom<pb::OrderInfo> for Order {
    type Error = Problem;

    fn try_from(o: pb::OrderInfo) -> Result<Self, Problem> {
        let status = OrderStatus::try_from(o.status)?;
        let delivery = Delivery {
            address: o.address,
            name: o.name,
            mobile: o.mobile,
            post: o.post,
        };
        Ok(Self {
            order_sn: o.order_sn,
            status,
            total_cents: o.total_cents,
            delivery,
            pay_type: o.pay_type,
            trade_no: o.trade_no,
            created_at: o.created_at,
        })
    }
}

/// Where the order goes: the body of `POST /v1/orders`, and an order's `delivery`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Leading and trailing whitespace is dropped; something must remain.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub address: String,
    #[schema(min_length = 1, max_length = 40, pattern = "\\S")]
    pub name: String,
    #[schema(min_length = 1, max_length = 20, pattern = "\\S")]
    pub mobile: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub post: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderGoods {
    pub goods_id: i32,
    pub goods_name: String,
    pub price_cents: i64,
    pub nums: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderWithGoods {
    pub order: Order,
    pub goods: Vec<OrderGoods>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// At most 100; absent or 0 means 10.
    #[param(minimum = 0, maximum = 100)]
    pub page_size: Option<u32>,
    /// The previous page's `next_page_token` (opaque, and only good for its user).
    #[param(pattern = "^(([0-9a-f]{2}){1,100})?$")]
    pub page_token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// Newest first.
    pub orders: Vec<Order>,
    /// How many orders the caller has, counted up to 10,000.
    pub total: u64,
    /// The caller has more than `total`.
    pub total_is_lower_bound: bool,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The `Idempotency-Key` as the order's request_id: 1-64 ASCII letters, digits, `-`, `_`
/// (a UUID fits); absent, every call places a new order.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(String::new());
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            (1..=64).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(|| {
            Problem::invalid(
                "Idempotency-Key",
                "1-64 ASCII letters, digits, '-' or '_' (a UUID fits)",
            )
        })?;
    Ok(key.to_owned())
}

/// Places an order from the caller's checked cart lines.
///
/// With an `Idempotency-Key`, a retry (after a lost answer, a 503 or a 504) returns the
/// order the first attempt placed, and concurrent duplicates place one order: the others
/// get it or 409 REQUEST_IN_PROGRESS (retry with the same key).
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "1-64 of [A-Za-z0-9_-] (a UUID fits); the same key returns the same order")),
    request_body = Delivery,
    responses(
        (status = 201, description = "The order (the first attempt's, for a repeated key)", body = Order,
         headers(("Location" = String, description = "The order's URL"))),
        (status = 404, description = "GOODS_NOT_FOUND", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "CART_EMPTY, INSUFFICIENT_STOCK, CART_FULL, ORDER_TOTAL_TOO_LARGE; CART_IN_USE, REQUEST_IN_PROGRESS, CONCURRENT_CHANGE (retry)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn place(
    State(state): State<AppState>,
    buyer: Buyer,
    headers: HeaderMap,
    Body(body): Body<Delivery>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?;
    let info = state
        .backends
        .order
        .clone()
        .create_order(within(
            pb::CreateOrderRequest {
                user_id: buyer.user_id,
                address: body.address,
                name: body.name,
                mobile: body.mobile,
                post: body.post,
                request_id,
            },
            state.budgets.order,
        ))
        .await?
        .into_inner();
    let order = Order::try_from(info)?;
    let location = HeaderValue::try_from(format!("/v1/orders/{}", order.order_sn))
        .map_err(|_| Problem::from(tonic::Status::internal("an order_sn that is not ASCII")))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}

/// The caller's orders, newest first.
#[utoipa::path(
    get, path = "/v1/orders", tag = "orders",
    params(OrdersQuery),
    responses((status = 200, description = "A page of orders", body = OrderPage)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    buyer: Buyer,
    Query(query): Query<OrdersQuery>,
) -> Result<Json<OrderPage>, Problem> {
    let page = state
        .backends
        .order
        .clone()
        .order_list(within(
            pb::OrderListRequest {
                user_id: buyer.user_id,
                page: 0,
                page_size: query.page_size.unwrap_or(0),
                page_token: query.page_token.unwrap_or_default(),
            },
            state.budgets.call,
        ))
        .await?
        .into_inner();
    Ok(Json(OrderPage {
        orders: page
            .orders
            .into_iter()
            .map(Order::try_from)
            .collect::<Result<_, _>>()?,
        total: page.total,
        total_is_lower_bound: page.total_is_lower_bound,
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// One of the caller's orders with its goods.
#[utoipa::path(
    get, path = "/v1/orders/{order_sn}", tag = "orders",
    params(("order_sn" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", max_length = 64, description = "The order's number")),
    responses(
        (status = 200, description = "The order and its goods", body = OrderWithGoods),
        (status = 404, description = "ORDER_NOT_FOUND (also for another buyer's order)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn detail(
    State(state): State<AppState>,
    buyer: Buyer,
    Path(order_sn): Path<String>,
) -> Result<Json<OrderWithGoods>, Problem> {
    let (order, goods) = order_of(&state, buyer.user_id, order_sn).await?;
    Ok(Json(OrderWithGoods {
        order,
        goods: goods
            .into_iter()
            .map(|g| OrderGoods {
                goods_id: g.goods_id,
                goods_name: g.goods_name,
                price_cents: g.price_cents,
                nums: g.nums,
            })
            .collect(),
    }))
}

/// The order `order_sn` if `owner` placed it (order_srv checks; another buyer's order
/// is NOT_FOUND), or whoever placed it for [`ANY_OWNER`].
pub async fn order_of(
    state: &AppState,
    owner: i64,
    order_sn: String,
) -> Result<(Order, Vec<pb::OrderGoods>), Problem> {
    let detail = state
        .backends
        .order
        .clone()
        .order_detail(within(
            pb::OrderDetailRequest {
                order_sn,
                user_id: owner,
            },
            state.budgets.call,
        ))
        .await?
        .into_inner();
    let order = detail
        .order
        .ok_or_else(|| Problem::from(tonic::Status::internal("OrderDetail without an order")))?;
    Ok((Order::try_from(order)?, detail.goods))
}

/// Cancels one of the caller's unpaid orders; its stock goes back. A repeated cancel
/// answers the closed order again.
#[utoipa::path(
    post, path = "/v1/orders/{order_sn}/cancel", tag = "orders",
    params(("order_sn" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", max_length = 64, description = "The order's number")),
    responses(
        (status = 200, description = "The closed order", body = Order),
        (status = 404, description = "ORDER_NOT_FOUND (also for another buyer's order)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "ORDER_STATUS: paid (refund instead) or further along", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    buyer: Buyer,
    Path(order_sn): Path<String>,
) -> Result<Json<Order>, Problem> {
    let info = state
        .backends
        .order
        .clone()
        .cancel_order(within(
            pb::CancelOrderRequest {
                order_sn,
                user_id: buyer.user_id,
            },
            state.budgets.call,
        ))
        .await?
        .into_inner();
    Ok(Json(Order::try_from(info)?))
}
