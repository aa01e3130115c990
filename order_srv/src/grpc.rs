//! The gRPC edge: validate into domain types, call the logic, map rows to messages.

use std::sync::Arc;

use proto::order::{self as pb, order_server::Order};
use sqlx::MySqlPool;
use tonic::{Request, Response, Status};

use crate::{
    cart,
    create_order::OrderPlacer,
    db::{CartRow, OrderGoodsRow, OrderRow},
    domain::{self, GoodsPage, GoodsPrice, NewOrder, Page, StatusChange},
    error::Error,
    metrics::OrderMetrics,
    orders,
    timeout::OrderCloser,
};

pub struct OrderService {
    pool: MySqlPool,
    placer: Arc<OrderPlacer>,
    closer: Arc<OrderCloser>,
    metrics: OrderMetrics,
}

impl OrderService {
    pub fn new(
        pool: MySqlPool,
        placer: Arc<OrderPlacer>,
        closer: Arc<OrderCloser>,
        metrics: OrderMetrics,
    ) -> Self {
        Self {
            pool,
            placer,
            closer,
            metrics,
        }
    }
}

#[tonic::async_trait]
impl Order for OrderService {
    async fn cart_item_list(
        &self,
        request: Request<pb::UserRequest>,
    ) -> Result<Response<pb::CartItemListResponse>, Status> {
        let user_id = domain::user_id(request.into_inner().user_id)?;
        let items = cart::list(&self.pool, user_id).await?;
        Ok(Response::new(pb::CartItemListResponse {
            items: items.into_iter().map(cart_item).collect(),
        }))
    }

    async fn create_cart_item(
        &self,
        request: Request<pb::CreateCartItemRequest>,
    ) -> Result<Response<pb::CartItem>, Status> {
        let req = request.into_inner();
        let user_id = domain::user_id(req.user_id)?;
        let goods_id = domain::goods_id(req.goods_id)?;
        let nums = domain::cart_nums(req.nums)?;
        let row = cart::add(&self.pool, user_id, goods_id, nums, req.checked).await?;
        Ok(Response::new(cart_item(row)))
    }

    async fn update_cart_item(
        &self,
        request: Request<pb::UpdateCartItemRequest>,
    ) -> Result<Response<pb::CartItem>, Status> {
        let req = request.into_inner();
        let user_id = domain::user_id(req.user_id)?;
        let goods_id = domain::goods_id(req.goods_id)?;
        let nums = req.nums.map(domain::cart_nums).transpose()?;
        let row = cart::update(&self.pool, user_id, goods_id, nums, req.checked).await?;
        Ok(Response::new(cart_item(row)))
    }

    async fn delete_cart_item(
        &self,
        request: Request<pb::DeleteCartItemRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let user_id = domain::user_id(req.user_id)?;
        let goods_id = domain::goods_id(req.goods_id)?;
        cart::delete(&self.pool, user_id, goods_id).await?;
        Ok(Response::new(pb::Empty {}))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::OrderInfo>, Status> {
        let started = std::time::Instant::now();
        let deadline = grpc_timeout(request.metadata());
        let placed = match NewOrder::try_from(request.into_inner()) {
            Ok(new_order) => self
                .placer
                .place(new_order, deadline)
                .await
                .map_err(Status::from),
            Err(e) => Err(Status::from(e)),
        };
        match placed {
            Ok(order) => {
                self.metrics.orders_created.inc();
                self.metrics.create_order_took("OK", started.elapsed());
                Ok(Response::new(order_info(order)))
            }
            Err(status) => {
                self.metrics.order_failed(status.code());
                self.metrics
                    .create_order_took(&format!("{:?}", status.code()), started.elapsed());
                Err(status)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(order_sn = %request.get_ref().order_sn))]
    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::OrderInfo>, Status> {
        let req = request.into_inner();
        let order_sn = domain::order_sn(&req.order_sn)?;
        let user_id = domain::user_id(req.user_id)?;
        let order = self.closer.cancel(&order_sn, user_id).await?;
        Ok(Response::new(order_info(order)))
    }

    async fn order_list(
        &self,
        request: Request<pb::OrderListRequest>,
    ) -> Result<Response<pb::OrderListResponse>, Status> {
        let req = request.into_inner();
        let user_id = domain::user_id(req.user_id)?;
        let page = Page::parse(user_id, req.page, req.page_size, &req.page_token)?;
        let page = orders::list(&self.pool, user_id, page).await?;
        Ok(Response::new(pb::OrderListResponse {
            total: page.total,
            orders: page.orders.into_iter().map(order_info).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            total_is_lower_bound: page.total_is_lower_bound,
        }))
    }

    async fn order_detail(
        &self,
        request: Request<pb::OrderDetailRequest>,
    ) -> Result<Response<pb::OrderDetailResponse>, Status> {
        let req = request.into_inner();
        let order_sn = domain::order_sn(&req.order_sn)?;
        if req.user_id < 0 {
            return Err(
                Error::InvalidArgument("user_id", "user_id must not be negative".into()).into(),
            );
        }
        let (order, goods) = orders::detail(&self.pool, &order_sn, req.user_id).await?;
        Ok(Response::new(pb::OrderDetailResponse {
            order: Some(order_info(order)),
            goods: goods.into_iter().map(order_goods).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_sn = %request.get_ref().order_sn))]
    async fn update_order_status(
        &self,
        request: Request<pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<pb::OrderInfo>, Status> {
        let change = StatusChange::try_from(request.into_inner())?;
        let order = orders::update_status(&self.pool, &change).await?;
        Ok(Response::new(order_info(order)))
    }

    async fn upsert_goods(
        &self,
        request: Request<pb::Goods>,
    ) -> Result<Response<pb::Goods>, Status> {
        let goods = GoodsPrice::try_from(request.into_inner())?;
        orders::upsert_goods(&self.pool, &goods).await?;
        Ok(Response::new(pb::Goods {
            id: goods.id,
            name: goods.name,
            price_cents: goods.price_cents,
        }))
    }

    async fn goods_list(
        &self,
        request: Request<pb::GoodsListRequest>,
    ) -> Result<Response<pb::GoodsListResponse>, Status> {
        let req = request.into_inner();
        let page = GoodsPage::parse(req.page_size, &req.page_token)?;
        let (goods, next) = orders::goods_page(&self.pool, page).await?;
        Ok(Response::new(pb::GoodsListResponse {
            goods: goods
                .into_iter()
                .map(|row| pb::Goods {
                    id: row.id,
                    name: row.name,
                    price_cents: row.price_cents,
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}

fn cart_item(row: CartRow) -> pb::CartItem {
    pb::CartItem {
        id: row.id,
        user_id: row.user_id,
        goods_id: row.goods_id,
        nums: row.nums,
        checked: row.checked,
    }
}

pub fn order_info(row: OrderRow) -> pb::OrderInfo {
    pb::OrderInfo {
        id: row.id,
        order_sn: row.order_sn,
        user_id: row.user_id,
        status: row.status.to_pb() as i32,
        total_cents: row.total_cents,
        address: row.address,
        name: row.name,
        mobile: row.mobile,
        post: row.post,
        pay_type: row.pay_type,
        trade_no: row.trade_no,
        created_at: row.created_at.to_rfc3339(),
    }
}

fn order_goods(row: OrderGoodsRow) -> pb::OrderGoods {
    pb::OrderGoods {
        goods_id: row.goods_id,
        goods_name: row.goods_name,
        price_cents: row.price_cents,
        nums: row.nums,
    }
}

/// The caller's deadline from its `grpc-timeout` header (gRPC over HTTP/2: an integer of
/// at most 8 digits and a unit, H M S m u n); `None` when absent or malformed.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(amount.checked_mul(3600)?),
        "M" => std::time::Duration::from_secs(amount.checked_mul(60)?),
        "S" => std::time::Duration::from_secs(amount),
        "m" => std::time::Duration::from_millis(amount),
        "u" => std::time::Duration::from_micros(amount),
        "n" => std::time::Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::grpc_timeout;

    fn parse(value: &str) -> Option<Duration> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().ok()?);
        grpc_timeout(&metadata)
    }

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_the_rest() {
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse("99n"), Some(Duration::from_nanos(99)));
        assert_eq!(parse("123456789S"), None, "more than 8 digits");
        assert_eq!(parse("S"), None);
        assert_eq!(parse("5x"), None);
        assert_eq!(parse("-5S"), None);
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }
}
