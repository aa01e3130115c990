//! The gRPC edge: validate, call the rules in [`crate::stock`], map the answer.

use std::time::Instant;

use observe::{Histogram, IntCounterVec, Registry};
use proto::inventory::{self as pb, inventory_server::Inventory};
use sqlx::MySqlPool;
use tonic::{Request, Response, Status};

use crate::{
    domain::{OrderSn, SellOrder, SellStatus, StockLevel, goods_id, goods_ids},
    stock::{self, RebackOutcome, SellOutcome},
};

pub struct InventoryService {
    pool: MySqlPool,
    /// `inventory_sells_total{outcome}`: Sells answered OK by this replica.
    sells: IntCounterVec,
    /// `inventory_sell_seconds`: how long those Sells took here, from the handler's start
    /// to its answer (what the caller sees minus the gRPC hop).
    sell_seconds: Histogram,
}

impl InventoryService {
    pub fn new(pool: MySqlPool, registry: &Registry) -> Self {
        let sells = observe::counter_vec(
            registry,
            "inventory_sells_total",
            "Sells answered OK by this replica, by outcome (deducted, already_deducted)",
            &["outcome"],
        );
        let sell_seconds = observe::latency_vec(
            registry,
            "inventory_sell_seconds",
            "Sells answered OK by this replica: from the handler's start to its answer",
            &[],
        )
        .with_label_values(&[] as &[&str]);
        Self {
            pool,
            sells,
            sell_seconds,
        }
    }
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    #[tracing::instrument(skip_all, fields(goods_id = request.get_ref().goods_id))]
    async fn set_inv(
        &self,
        request: Request<pb::SetInvRequest>,
    ) -> Result<Response<pb::GoodsInv>, Status> {
        let level = StockLevel::try_from(request.into_inner())?;
        stock::set_level(&self.pool, &level).await?;
        Ok(Response::new(pb::GoodsInv {
            goods_id: level.goods_id,
            stocks: i64::from(level.stocks),
        }))
    }

    async fn inv_detail(
        &self,
        request: Request<pb::InvDetailRequest>,
    ) -> Result<Response<pb::GoodsInv>, Status> {
        let id = goods_id(request.into_inner().goods_id)?;
        let stocks = stock::level_of(&self.pool, id).await?;
        Ok(Response::new(pb::GoodsInv {
            goods_id: id,
            stocks,
        }))
    }

    async fn batch_inv_detail(
        &self,
        request: Request<pb::BatchInvDetailRequest>,
    ) -> Result<Response<pb::BatchInvDetailResponse>, Status> {
        let ids = goods_ids(&request.into_inner().goods_ids)?;
        let items = stock::levels_of(&self.pool, &ids)
            .await?
            .into_iter()
            .map(|(goods_id, stocks)| pb::GoodsInv { goods_id, stocks })
            .collect();
        Ok(Response::new(pb::BatchInvDetailResponse { items }))
    }

    #[tracing::instrument(skip_all, fields(order_sn = %request.get_ref().order_sn))]
    async fn sell(
        &self,
        request: Request<pb::SellRequest>,
    ) -> Result<Response<pb::SellResponse>, Status> {
        let started = Instant::now();
        let order = SellOrder::try_from(request.into_inner())?;
        let outcome = stock::sell(&self.pool, &order).await?;
        self.sell_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(?outcome, "sell");
        self.sells
            .with_label_values(&[match outcome {
                SellOutcome::Deducted => "deducted",
                SellOutcome::AlreadyDeducted => "already_deducted",
            }])
            .inc();
        Ok(Response::new(pb::SellResponse {
            already_deducted: outcome == SellOutcome::AlreadyDeducted,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_sn = %request.get_ref().order_sn))]
    async fn reback(
        &self,
        request: Request<pb::RebackRequest>,
    ) -> Result<Response<pb::RebackResponse>, Status> {
        let order_sn = OrderSn::parse(&request.into_inner().order_sn)?;
        let outcome = stock::reback(&self.pool, &order_sn).await?;
        tracing::info!(?outcome, "reback");
        Ok(Response::new(pb::RebackResponse {
            outcome: reback_outcome(outcome) as i32,
        }))
    }

    async fn sell_detail(
        &self,
        request: Request<pb::SellDetailRequest>,
    ) -> Result<Response<pb::SellDetailResponse>, Status> {
        let order_sn = OrderSn::parse(&request.into_inner().order_sn)?;
        let (status, lines) = stock::sell_detail(&self.pool, &order_sn).await?;
        Ok(Response::new(pb::SellDetailResponse {
            order_sn: order_sn.to_string(),
            status: match status {
                SellStatus::Deducted => pb::SellStatus::Deducted,
                SellStatus::Returned => pb::SellStatus::Returned,
            } as i32,
            items: lines
                .into_iter()
                .map(|l| pb::GoodsNum {
                    goods_id: l.goods_id,
                    num: l.num,
                })
                .collect(),
        }))
    }
}

pub fn reback_outcome(outcome: RebackOutcome) -> pb::RebackOutcome {
    match outcome {
        RebackOutcome::Returned => pb::RebackOutcome::Returned,
        RebackOutcome::AlreadyReturned => pb::RebackOutcome::AlreadyReturned,
        RebackOutcome::Tombstoned => pb::RebackOutcome::Tombstoned,
    }
}
