//! Validated request types: the core never sees an unchecked protobuf message.

use std::collections::BTreeMap;

use proto::inventory as pb;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Most distinct goods in one Sell; bounds the transaction's size and lock set.
pub const MAX_SELL_ITEMS: usize = 200;

/// An order number that passed [`proto::check_order_sn`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderSn(String);

impl OrderSn {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        proto::check_order_sn(raw).map_err(|reason| Error::InvalidArgument("order_sn", reason))?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrderSn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive goods id.
pub fn goods_id(raw: i32) -> Result<i32, Error> {
    proto::check_id("goods_id", raw.into())
        .map_err(|reason| Error::InvalidArgument("goods_id", reason))?;
    Ok(raw)
}

/// Largest batch accepted by `BatchInvDetail`.
pub const MAX_BATCH: usize = 1000;

/// The goods ids of a batch query: at most [`MAX_BATCH`], each valid.
pub fn goods_ids(raw: &[i32]) -> Result<Vec<i32>, Error> {
    if raw.len() > MAX_BATCH {
        return Err(Error::InvalidArgument(
            "goods_ids",
            format!("at most {MAX_BATCH} goods_ids"),
        ));
    }
    raw.iter().map(|id| goods_id(*id)).collect()
}

/// One line of a Sell, as stored in `stock_sell_detail.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellLine {
    pub goods_id: i32,
    pub num: i32,
}

/// The goods of one order, non-empty, unique, in ascending goods id order: the order
/// every transaction locks inventory rows in, so concurrent Sells never deadlock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SellLines(Vec<SellLine>);

impl SellLines {
    pub fn parse(items: &[pb::GoodsNum]) -> Result<Self, Error> {
        if items.is_empty() {
            return Err(Error::InvalidArgument(
                "items",
                "items must not be empty".into(),
            ));
        }
        if items.len() > MAX_SELL_ITEMS {
            return Err(Error::InvalidArgument(
                "items",
                format!("at most {MAX_SELL_ITEMS} goods per order"),
            ));
        }
        let mut lines = BTreeMap::new();
        for item in items {
            let id = goods_id(item.goods_id)?;
            if item.num <= 0 {
                return Err(Error::InvalidArgument(
                    "items.num",
                    format!("num of goods {id} must be positive, got {}", item.num),
                ));
            }
            if lines.insert(id, item.num).is_some() {
                return Err(Error::InvalidArgument(
                    "items.goods_id",
                    format!("goods {id} appears more than once"),
                ));
            }
        }
        Ok(Self(
            lines
                .into_iter()
                .map(|(goods_id, num)| SellLine { goods_id, num })
                .collect(),
        ))
    }

    /// Reads the stored JSON detail back (an empty list for a tombstone).
    pub fn from_json(json: &str) -> Result<Vec<SellLine>, serde_json::Error> {
        let mut lines: Vec<SellLine> = serde_json::from_str(json)?;
        lines.sort_by_key(|l| l.goods_id);
        Ok(lines)
    }

    pub fn to_json(&self) -> String {
        // A Vec of two integers per element always serializes.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".to_owned())
    }

    pub fn lines(&self) -> &[SellLine] {
        &self.0
    }
}

/// A validated Sell request.
#[derive(Clone, Debug)]
pub struct SellOrder {
    pub order_sn: OrderSn,
    pub lines: SellLines,
}

impl TryFrom<pb::SellRequest> for SellOrder {
    type Error = Error;

    fn try_from(req: pb::SellRequest) -> Result<Self, Error> {
        Ok(Self {
            order_sn: OrderSn::parse(&req.order_sn)?,
            lines: SellLines::parse(&req.items)?,
        })
    }
}

/// A validated SetInv request.
#[derive(Clone, Copy, Debug)]
pub struct StockLevel {
    pub goods_id: i32,
    pub stocks: i32,
}

impl TryFrom<pb::SetInvRequest> for StockLevel {
    type Error = Error;

    fn try_from(req: pb::SetInvRequest) -> Result<Self, Error> {
        if req.stocks < 0 {
            return Err(Error::InvalidArgument(
                "stocks",
                format!("stocks must not be negative, got {}", req.stocks),
            ));
        }
        Ok(Self {
            goods_id: goods_id(req.goods_id)?,
            stocks: req.stocks,
        })
    }
}

/// Status of a `stock_sell_detail` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SellStatus {
    Deducted,
    Returned,
}

impl SellStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deducted => "DEDUCTED",
            Self::Returned => "RETURNED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "DEDUCTED" => Some(Self::Deducted),
            "RETURNED" => Some(Self::Returned),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(goods_id: i32, num: i32) -> pb::GoodsNum {
        pb::GoodsNum { goods_id, num }
    }

    #[test]
    fn sell_lines_are_sorted_by_goods_id() {
        let lines = SellLines::parse(&[item(3, 1), item(1, 2)]).expect("valid");
        let ids: Vec<_> = lines.lines().iter().map(|l| l.goods_id).collect();
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn duplicate_goods_and_non_positive_nums_are_rejected() {
        assert!(SellLines::parse(&[item(1, 1), item(1, 2)]).is_err());
        assert!(SellLines::parse(&[item(1, 0)]).is_err());
        assert!(SellLines::parse(&[item(0, 1)]).is_err());
        assert!(SellLines::parse(&[]).is_err());
    }

    #[test]
    fn order_sn_is_bounded_and_plain() {
        assert!(OrderSn::parse("").is_err());
        assert!(OrderSn::parse(&"a".repeat(65)).is_err());
        assert!(OrderSn::parse("a b").is_err());
        assert!(OrderSn::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn detail_json_round_trips() {
        let lines = SellLines::parse(&[item(2, 5), item(1, 1)]).expect("valid");
        let back = SellLines::from_json(&lines.to_json()).expect("json");
        assert_eq!(back, lines.lines());
    }
}
