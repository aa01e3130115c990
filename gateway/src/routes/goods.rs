//! `GET /v1/goods`: the price list (order_srv) with each goods' live stock
//! (inventory_srv), a page at a time.

use axum::{Json, extract::State};
use proto::{inventory as inv, order as pb};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{auth::Buyer, backends::within, extract::Query, problem::Problem, startup::AppState};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GoodsQuery {
    /// At most 200; absent or 0 means 50.
    #[param(minimum = 0, maximum = 200)]
    pub page_size: Option<u32>,
    /// The previous page's `next_page_token`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub page_token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Goods {
    pub id: i32,
    pub name: String,
    pub price_cents: i64,
    /// Units in stock now (not reserved: another order may take them first).
    pub stock: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GoodsPage {
    pub goods: Vec<Goods>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The price list with live stock.
#[utoipa::path(
    get, path = "/v1/goods", tag = "goods",
    params(GoodsQuery),
    responses((status = 200, description = "A page of goods", body = GoodsPage)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _buyer: Buyer,
    Query(query): Query<GoodsQuery>,
) -> Result<Json<GoodsPage>, Problem> {
    let budget = state.budgets.call;
    let page = state
        .backends
        .order
        .clone()
        .goods_list(within(
            pb::GoodsListRequest {
                page_size: query.page_size.unwrap_or(0),
                page_token: query.page_token.unwrap_or_default(),
            },
            budget,
        ))
        .await?
        .into_inner();
    let ids: Vec<i32> = page.goods.iter().map(|g| g.id).collect();
    let stock = if ids.is_empty() {
        Vec::new()
    } else {
        state
            .backends
            .inventory
            .clone()
            .batch_inv_detail(within(
                inv::BatchInvDetailRequest { goods_ids: ids },
                budget,
            ))
            .await?
            .into_inner()
            .items
    };
    let goods = page
        .goods
        .into_iter()
        .map(|g| Goods {
            stock: stock
                .iter()
                .find(|s| s.goods_id == g.id)
                .map_or(0, |s| s.stocks),
            id: g.id,
            name: g.name,
            price_cents: g.price_cents,
        })
        .collect();
    Ok(Json(GoodsPage {
        goods,
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}
