//! The one error type of the service and its mapping to gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` domain of this service's refusals.
pub const ERROR_DOMAIN: &str = "order.v1";

/// Why a request was refused, for a gateway to act on (`google.rpc.ErrorInfo.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    GoodsNotFound,
    NotInCart,
    OrderNotFound,
    /// A cart line would pass the quantity limit.
    CartLineLimit,
    /// The cart holds as many different goods as one order may.
    CartFull,
    CartEmpty,
    OrderTotalTooLarge,
    /// The order's status does not allow the change (paid, closed, ...).
    OrderStatus,
    /// Another CreateOrder holds the cart: retry (with the same request_id) to see it.
    CartInUse,
    /// An attempt with the same request_id may be running: retry with the same request_id.
    RequestInProgress,
    /// A row changed under the request: retry.
    ConcurrentChange,
    /// The reconciler's horizon is too long for how long barrier rows are kept.
    ReconcileHorizon,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::GoodsNotFound => "GOODS_NOT_FOUND",
            Self::NotInCart => "NOT_IN_CART",
            Self::OrderNotFound => "ORDER_NOT_FOUND",
            Self::CartLineLimit => "CART_LINE_LIMIT",
            Self::CartFull => "CART_FULL",
            Self::CartEmpty => "CART_EMPTY",
            Self::OrderTotalTooLarge => "ORDER_TOTAL_TOO_LARGE",
            Self::OrderStatus => "ORDER_STATUS",
            Self::CartInUse => "CART_IN_USE",
            Self::RequestInProgress => "REQUEST_IN_PROGRESS",
            Self::ConcurrentChange => "CONCURRENT_CHANGE",
            Self::ReconcileHorizon => "RECONCILE_HORIZON",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid (`google.rpc.BadRequest` names it).
    #[error("{1}")]
    InvalidArgument(&'static str, String),
    #[error("{1}")]
    NotFound(Reason, String),
    #[error("{1}")]
    FailedPrecondition(Reason, String),
    /// Lost a race with a concurrent request on the same data (e.g. the same cart); the
    /// caller may retry, and will then see the winner's effect.
    #[error("{1}")]
    Aborted(Reason, String),
    /// A definitive refusal from inventory (insufficient stock, unknown goods, ...),
    /// passed through with its code and message.
    #[error("inventory refused: {0}")]
    InventoryRefused(Status),
    /// The broker, inventory or the database could not be reached, or an outcome is
    /// unknown; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Building or sending a message failed (the client's error chain is the source).
    #[error("message broker: {}", mq::describe(.0))]
    Mq(#[from] mq::MqError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(field, msg) => Status::with_error_details(
                Code::InvalidArgument,
                msg.clone(),
                ErrorDetails::with_bad_request_violation(field, msg),
            ),
            Error::NotFound(reason, msg) => refusal(Code::NotFound, reason, msg),
            Error::FailedPrecondition(reason, msg) => {
                refusal(Code::FailedPrecondition, reason, msg)
            }
            Error::Aborted(reason, msg) => refusal(Code::Aborted, reason, msg),
            // Code, message and details (inventory's ErrorInfo) as inventory sent them.
            Error::InventoryRefused(status) => Status::with_details(
                status.code(),
                status.message().to_owned(),
                status.details().to_vec().into(),
            ),
            Error::Unavailable(msg) => Status::unavailable(msg),
            Error::Database(db) => service_db::status_of(&db),
            Error::Mq(e) => {
                let reason = mq::describe(&e);
                match e {
                    mq::MqError::Client(_) => {
                        mq::BROKER.failed(&reason);
                        Status::unavailable(format!("message broker unavailable: {reason}"))
                    }
                    _ => {
                        tracing::error!(error = %reason, "message broker error");
                        Status::internal("internal error")
                    }
                }
            }
            Error::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn refusal(code: Code, reason: Reason, message: String) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(
            reason.as_str(),
            ERROR_DOMAIN,
            std::collections::HashMap::new(),
        ),
    )
}

/// Whether an inventory status is a definitive "no" (nothing was deducted) rather than
/// an unknown outcome. Anything not listed here counts as unknown: committing the
/// reback then is always safe, while guessing "refused" could leak stock.
pub fn is_definitive_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists
    )
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
