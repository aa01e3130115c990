//! The one error type of the service and its mapping to gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A refusal with its `google.rpc.ErrorInfo` (domain `inventory.v1`), which order_srv
/// passes on to its caller.
fn refusal<const N: usize>(
    code: Code,
    err: &Error,
    reason: &str,
    metadata: [(&str, String); N],
) -> Status {
    let metadata: std::collections::HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Status::with_error_details(
        code,
        err.to_string(),
        ErrorDetails::with_error_info(reason, "inventory.v1", metadata),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid (`google.rpc.BadRequest` names it).
    #[error("{1}")]
    InvalidArgument(&'static str, String),
    #[error("goods {0} has no inventory")]
    GoodsNotFound(i32),
    #[error("insufficient stock for goods {goods_id}: wanted {wanted}, available {available}")]
    InsufficientStock {
        goods_id: i32,
        wanted: i32,
        available: i64,
    },
    #[error("order {0} was already returned; its stock can no longer be sold")]
    AlreadyReturned(String),
    #[error("order {0} was already sold with different items")]
    ConflictingSell(String),
    #[error("no sell detail for order {0}")]
    SellDetailNotFound(String),
    #[error("stored sell detail of order {order_sn} is unreadable: {reason}")]
    CorruptDetail { order_sn: String, reason: String },
    /// A concurrent writer changed the row this transaction was working on in a way it
    /// cannot continue from (e.g. a detail row deleted between two reads); a retry starts
    /// from the new state.
    #[error("concurrent change: {0}")]
    Conflict(String),
    /// A failure injected by a test failpoint.
    #[error("injected fault at {0}")]
    Injected(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match &err {
            Error::InvalidArgument(field, msg) => Status::with_error_details(
                Code::InvalidArgument,
                msg.clone(),
                ErrorDetails::with_bad_request_violation(*field, msg.clone()),
            ),
            Error::GoodsNotFound(goods_id) => refusal(
                Code::NotFound,
                &err,
                "GOODS_NOT_FOUND",
                [("goods_id", goods_id.to_string())],
            ),
            Error::SellDetailNotFound(_) => Status::not_found(err.to_string()),
            Error::InsufficientStock {
                goods_id,
                wanted,
                available,
            } => refusal(
                Code::FailedPrecondition,
                &err,
                "INSUFFICIENT_STOCK",
                [
                    ("goods_id", goods_id.to_string()),
                    ("wanted", wanted.to_string()),
                    ("available", available.to_string()),
                ],
            ),
            Error::AlreadyReturned(_) => {
                refusal(Code::FailedPrecondition, &err, "ORDER_RETURNED", [])
            }
            Error::ConflictingSell(_) => refusal(Code::AlreadyExists, &err, "CONFLICTING_SELL", []),
            Error::Conflict(_) => Status::aborted(err.to_string()),
            Error::Injected(_) => Status::unavailable(err.to_string()),
            Error::CorruptDetail { .. } => {
                tracing::error!(error = %err, "corrupt sell detail");
                Status::internal("internal error")
            }
            // Pool exhaustion and lost connections are worth a retry; the rest is ours.
            Error::Database(db) => service_db::status_of(db),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
