//! Validated request types and the order state machine.

use chrono::{DateTime, Datelike, Utc};
use proto::order as pb;

use crate::error::Error;

pub const MAX_ADDRESS_LEN: usize = 200;
pub const MAX_NAME_LEN: usize = 40;
pub const MAX_MOBILE_LEN: usize = 20;
pub const MAX_POST_LEN: usize = 200;
/// The most of one goods a cart line (and so an order line) may hold.
pub const MAX_CART_NUMS: i32 = 10_000;
/// The most distinct goods one cart may hold (inventory refuses larger Sells too).
pub const MAX_CART_LINES: i64 = 200;
/// The highest price a goods may have: 10^12 cents. With at most [`MAX_CART_LINES`] lines
/// of at most [`MAX_CART_NUMS`] each, an order total stays below 2 * 10^18 cents, inside
/// `i64` (about 9.2 * 10^18), so no total computed from the cart can overflow.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;

pub fn user_id(raw: i64) -> Result<i64, Error> {
    proto::check_id("user_id", raw).map_err(|reason| Error::InvalidArgument("user_id", reason))?;
    Ok(raw)
}

pub fn goods_id(raw: i32) -> Result<i32, Error> {
    proto::check_id("goods_id", raw.into())
        .map_err(|reason| Error::InvalidArgument("goods_id", reason))?;
    Ok(raw)
}

pub fn cart_nums(raw: i32) -> Result<i32, Error> {
    if !(1..=MAX_CART_NUMS).contains(&raw) {
        return Err(Error::InvalidArgument(
            "nums",
            format!("nums must be between 1 and {MAX_CART_NUMS}, got {raw}"),
        ));
    }
    Ok(raw)
}

/// A text field: leading and trailing whitespace is dropped (it is never meaningful in a
/// name, an address or a phone number, and a gateway's form often carries it), then the
/// length is checked in characters.
fn bounded(field: &'static str, raw: &str, max: usize, required: bool) -> Result<String, Error> {
    let value = raw.trim();
    if required && value.is_empty() {
        return Err(Error::InvalidArgument(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(Error::InvalidArgument(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// An order number as accepted from callers ([`proto::check_order_sn`], as in inventory).
pub fn order_sn(raw: &str) -> Result<String, Error> {
    proto::check_order_sn(raw).map_err(|reason| Error::InvalidArgument("order_sn", reason))?;
    Ok(raw.to_owned())
}

/// The total of priced lines, or `None` when it does not fit in an `i64`. The bounds on
/// prices, quantities and cart lines keep every total that can be built from a cart in
/// range; the checked arithmetic stands guard for rows written before those bounds.
pub fn order_total(lines: impl IntoIterator<Item = (i64, i32)>) -> Option<i64> {
    lines
        .into_iter()
        .try_fold(0_i64, |total, (price_cents, nums)| {
            total.checked_add(price_cents.checked_mul(i64::from(nums))?)
        })
}

/// A validated CreateOrder request.
#[derive(Clone, Debug)]
pub struct NewOrder {
    pub user_id: i64,
    pub address: String,
    pub name: String,
    pub mobile: String,
    pub post: String,
    /// The caller's idempotency key (AIP-155), if any.
    pub request_id: Option<String>,
}

/// An idempotency key: empty means none; otherwise 1 to 64 ASCII letters, digits, `-`
/// or `_` (the order_sn rule).
pub fn request_id(raw: &str) -> Result<Option<String>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    proto::check_order_sn(raw).map_err(|reason| {
        Error::InvalidArgument("request_id", reason.replace("order_sn", "request_id"))
    })?;
    Ok(Some(raw.to_owned()))
}

impl TryFrom<pb::CreateOrderRequest> for NewOrder {
    type Error = Error;

    fn try_from(req: pb::CreateOrderRequest) -> Result<Self, Error> {
        Ok(Self {
            user_id: user_id(req.user_id)?,
            address: bounded("address", &req.address, MAX_ADDRESS_LEN, true)?,
            name: bounded("name", &req.name, MAX_NAME_LEN, true)?,
            mobile: bounded("mobile", &req.mobile, MAX_MOBILE_LEN, true)?,
            post: bounded("post", &req.post, MAX_POST_LEN, false)?,
            request_id: request_id(&req.request_id)?,
        })
    }
}

/// A validated goods upsert.
#[derive(Clone, Debug)]
pub struct GoodsPrice {
    pub id: i32,
    pub name: String,
    pub price_cents: i64,
}

impl TryFrom<pb::Goods> for GoodsPrice {
    type Error = Error;

    fn try_from(req: pb::Goods) -> Result<Self, Error> {
        if !(0..=MAX_PRICE_CENTS).contains(&req.price_cents) {
            return Err(Error::InvalidArgument(
                "price_cents",
                format!(
                    "price_cents must be between 0 and {MAX_PRICE_CENTS}, got {}",
                    req.price_cents
                ),
            ));
        }
        Ok(Self {
            id: goods_id(req.id)?,
            name: bounded("name", &req.name, 100, true)?,
            price_cents: req.price_cents,
        })
    }
}

/// Order lifecycle. Only [`OrderStatus::allowed_sources`] may move into a status. Stored
/// as its name (`WAIT_BUYER_PAY`, ...) in a VARCHAR and decoded once, when a row is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    WaitBuyerPay,
    Paying,
    TradeSuccess,
    TradeFinished,
    TradeClosed,
}

impl OrderStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WaitBuyerPay => "WAIT_BUYER_PAY",
            Self::Paying => "PAYING",
            Self::TradeSuccess => "TRADE_SUCCESS",
            Self::TradeFinished => "TRADE_FINISHED",
            Self::TradeClosed => "TRADE_CLOSED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::WaitBuyerPay,
            Self::Paying,
            Self::TradeSuccess,
            Self::TradeFinished,
            Self::TradeClosed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// The statuses an UpdateOrderStatus call may move an order *from* to reach `self`.
    /// TRADE_CLOSED is reached only by the pay timeout, never by a call, so a late
    /// payment cannot reopen a closed order and a closed order cannot be paid.
    pub fn allowed_sources(self) -> &'static [OrderStatus] {
        match self {
            Self::Paying => &[Self::WaitBuyerPay],
            Self::TradeSuccess => &[Self::WaitBuyerPay, Self::Paying],
            Self::TradeFinished => &[Self::TradeSuccess],
            Self::WaitBuyerPay | Self::TradeClosed => &[],
        }
    }

    pub fn to_pb(self) -> pb::OrderStatus {
        match self {
            Self::WaitBuyerPay => pb::OrderStatus::WaitBuyerPay,
            Self::Paying => pb::OrderStatus::Paying,
            Self::TradeSuccess => pb::OrderStatus::TradeSuccess,
            Self::TradeFinished => pb::OrderStatus::TradeFinished,
            Self::TradeClosed => pb::OrderStatus::TradeClosed,
        }
    }

    pub fn from_pb(raw: i32) -> Option<Self> {
        match pb::OrderStatus::try_from(raw).ok()? {
            pb::OrderStatus::WaitBuyerPay => Some(Self::WaitBuyerPay),
            pb::OrderStatus::Paying => Some(Self::Paying),
            pb::OrderStatus::TradeSuccess => Some(Self::TradeSuccess),
            pb::OrderStatus::TradeFinished => Some(Self::TradeFinished),
            pb::OrderStatus::TradeClosed => Some(Self::TradeClosed),
            pb::OrderStatus::Unspecified => None,
        }
    }
}

/// One page of a user's orders (newest first).
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub limit: u32,
    pub start: PageStart,
}

/// Where a page starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PageStart {
    /// After this many orders (offset paging: its cost grows with the offset).
    Offset(u64),
    /// After this order (a page token: every page costs the same).
    After { created_at: DateTime<Utc>, id: i64 },
}

/// A page of the price list: the goods after id `after`, at most `size` of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GoodsPage {
    pub after: i32,
    pub size: u32,
}

pub const DEFAULT_GOODS_PAGE_SIZE: u32 = 50;
pub const MAX_GOODS_PAGE_SIZE: u32 = 200;

impl GoodsPage {
    /// `page_size` is 1..=200 (0 means 50); `page_token` is empty or the previous page's
    /// `next_page_token` (the last goods id it held).
    pub fn parse(page_size: u32, page_token: &str) -> Result<Self, Error> {
        let size = match page_size {
            0 => DEFAULT_GOODS_PAGE_SIZE,
            n if n <= MAX_GOODS_PAGE_SIZE => n,
            n => {
                return Err(Error::InvalidArgument(
                    "page_size",
                    format!("page_size must be at most {MAX_GOODS_PAGE_SIZE}, got {n}"),
                ));
            }
        };
        let after = match page_token {
            "" => 0,
            // A goods id; one past every id there can be is a page after everything.
            token => token
                .parse::<u64>()
                .ok()
                .filter(|id| *id > 0)
                .map(|id| i32::try_from(id).unwrap_or(i32::MAX))
                .ok_or_else(|| {
                    Error::InvalidArgument(
                        "page_token",
                        "page_token must be a next_page_token from GoodsList".into(),
                    )
                })?,
        };
        Ok(Self { after, size })
    }
}

pub const DEFAULT_PAGE_SIZE: u32 = 10;
pub const MAX_PAGE_SIZE: u32 = 100;
/// How far offset paging reaches (orders skipped). Beyond it a page costs a scan of every
/// order before it (79 ms for the last page of a user with 100,000 orders, measured), so
/// it is refused and page tokens take over.
pub const MAX_OFFSET: u64 = 10_000;

impl Page {
    /// `page` is 1-based (0 means 1); `page_size` is 1..=100 (0 means 10); a non-empty
    /// `page_token` (from [`page_token`], for the same user) starts the page after the
    /// order it names.
    pub fn parse(user_id: i64, page: u32, page_size: u32, page_token: &str) -> Result<Self, Error> {
        let limit = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n <= MAX_PAGE_SIZE => n,
            n => {
                return Err(Error::InvalidArgument(
                    "page_size",
                    format!("page_size must be at most {MAX_PAGE_SIZE}, got {n}"),
                ));
            }
        };
        if !page_token.is_empty() {
            if page > 1 {
                return Err(Error::InvalidArgument(
                    "page",
                    "page and page_token exclude each other: leave page at 0".into(),
                ));
            }
            let (created_at, id) = read_page_token(user_id, page_token)?;
            return Ok(Self {
                limit,
                start: PageStart::After { created_at, id },
            });
        }
        // Both factors are u32, so the product fits in u64.
        let offset = u64::from(page.max(1) - 1) * u64::from(limit);
        if offset.saturating_add(u64::from(limit)) > MAX_OFFSET {
            return Err(Error::InvalidArgument(
                "page",
                format!(
                    "page numbers reach the first {MAX_OFFSET} orders; page further with \
                     page_token (each answer's next_page_token)"
                ),
            ));
        }
        Ok(Self {
            limit,
            start: PageStart::Offset(offset),
        })
    }
}

/// The token of the page after `order` of `user_id`'s list: opaque to callers (hex of
/// `v1:<user_id>:<created_at, µs>:<id>`), checked on the way back.
pub fn page_token(user_id: i64, created_at: DateTime<Utc>, id: i64) -> String {
    format!("v1:{user_id}:{}:{id}", created_at.timestamp_micros())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_page_token(user_id: i64, token: &str) -> Result<(DateTime<Utc>, i64), Error> {
    let invalid = || {
        Error::InvalidArgument(
            "page_token",
            "page_token is not a next_page_token of this user's list".into(),
        )
    };
    if token.len() > 200 || !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(invalid)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut fields = text.split(':');
    let (Some("v1"), Some(owner), Some(micros), Some(id), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(invalid());
    };
    if owner.parse::<i64>().ok() != Some(user_id) {
        return Err(invalid());
    }
    // MySQL's DATETIME holds years 1000-9999; a time outside can't come from a row.
    let created_at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|at| (1000..=9999).contains(&at.year()))
        .ok_or_else(invalid)?;
    let id = id.parse::<i64>().map_err(|_| invalid())?;
    Ok((created_at, id))
}

impl sqlx::Type<sqlx::MySql> for OrderStatus {
    fn type_info() -> sqlx::mysql::MySqlTypeInfo {
        <str as sqlx::Type<sqlx::MySql>>::type_info()
    }

    fn compatible(ty: &sqlx::mysql::MySqlTypeInfo) -> bool {
        <str as sqlx::Type<sqlx::MySql>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::MySql> for OrderStatus {
    fn decode(value: sqlx::mysql::MySqlValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let raw = <&str as sqlx::Decode<sqlx::MySql>>::decode(value)?;
        Self::parse(raw).ok_or_else(|| format!("unknown order status {raw:?}").into())
    }
}

/// A validated UpdateOrderStatus request.
#[derive(Clone, Debug)]
pub struct StatusChange {
    pub order_sn: String,
    pub to: OrderStatus,
    pub pay_type: String,
    pub trade_no: String,
}

impl TryFrom<pb::UpdateOrderStatusRequest> for StatusChange {
    type Error = Error;

    fn try_from(req: pb::UpdateOrderStatusRequest) -> Result<Self, Error> {
        let to = OrderStatus::from_pb(req.status).ok_or_else(|| {
            Error::InvalidArgument("status", format!("unknown status {}", req.status))
        })?;
        if to.allowed_sources().is_empty() {
            return Err(Error::InvalidArgument(
                "status",
                format!("status {} cannot be set by a call", to.as_str()),
            ));
        }
        Ok(Self {
            order_sn: order_sn(&req.order_sn)?,
            to,
            pay_type: bounded("pay_type", &req.pay_type, 20, false)?,
            trade_no: bounded("trade_no", &req.trade_no, 100, false)?,
        })
    }
}
