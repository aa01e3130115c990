//! The gRPC requests the runs send, each built in one place: the goods and stock they
//! seed, a buyer's cart line, CreateOrder and payment; and the channel with a deadline on
//! every call.

use std::time::Duration;

use proto::{
    inventory::{self as inv, inventory_client::InventoryClient},
    order::{self as pb, order_client::OrderClient},
};
use tonic::transport::{Channel, Endpoint};

/// The longest a call on a [`channel`] waits: past every server-side bound (the budget,
/// the handlers' 10 s), so it only ends a call whose server hangs, which chaos's summary
/// then shows as the slowest answer instead of the run hanging.
pub(crate) const CALL_WITHIN: Duration = Duration::from_secs(30);

/// A channel to `addr` that gives up connecting after 2 s and every call on it after
/// [`CALL_WITHIN`] (the call then fails `Cancelled`: its outcome is unknown).
pub(crate) async fn channel(addr: String) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(addr)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_WITHIN)
        .connect()
        .await?)
}

/// One line of a buyer's cart, checked for the next order.
pub(crate) fn cart_line(user_id: i64, goods_id: i32, nums: i32) -> pb::CreateCartItemRequest {
    pb::CreateCartItemRequest {
        user_id,
        goods_id,
        nums,
        checked: Some(true),
    }
}

/// CreateOrder for `user_id`'s cart, shipped to `name` at `address`; an empty
/// `request_id` is none.
pub(crate) fn order_request(
    user_id: i64,
    address: &str,
    name: &str,
    request_id: &str,
) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        user_id,
        address: address.into(),
        name: name.into(),
        mobile: "13800000000".into(),
        post: String::new(),
        request_id: request_id.into(),
    }
}

/// The payment of `order_sn` (trade number `T<order_sn>`).
pub(crate) fn payment(order_sn: &str, pay_type: &str) -> pb::UpdateOrderStatusRequest {
    pb::UpdateOrderStatusRequest {
        order_sn: order_sn.to_owned(),
        status: pb::OrderStatus::TradeSuccess as i32,
        pay_type: pay_type.into(),
        trade_no: format!("T{order_sn}"),
    }
}

/// What seeding does to a goods' stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stock {
    /// Set it.
    Set,
    /// Set it only when inventory_srv does not know the goods yet.
    KeepKnown,
}

/// Puts each of `goods` into both services: its name and price into order_srv, its stock
/// into inventory_srv (as `policy` says).
pub(crate) async fn seed_goods(
    order: &mut OrderClient<Channel>,
    inventory: &mut InventoryClient<Channel>,
    goods: impl IntoIterator<Item = (pb::Goods, i32)>,
    policy: Stock,
) -> anyhow::Result<()> {
    for (goods, stocks) in goods {
        let goods_id = goods.id;
        order.upsert_goods(goods).await?;
        if policy == Stock::KeepKnown
            && inventory
                .inv_detail(inv::InvDetailRequest { goods_id })
                .await
                .is_ok()
        {
            continue;
        }
        inventory
            .set_inv(inv::SetInvRequest { goods_id, stocks })
            .await?;
    }
    Ok(())
}

/// Goods `id`, named `goods <id>`, at `price_cents`.
pub(crate) fn numbered_goods(id: i32, price_cents: i64) -> pb::Goods {
    pb::Goods {
        id,
        name: format!("goods {id}"),
        price_cents,
    }
}
