//! The one error type of the service and its mapping to gRPC statuses.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Lost a race with a concurrent request on the same data (e.g. the same cart); the
    /// caller may retry, and will then see the winner's effect.
    #[error("{0}")]
    Aborted(String),
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
            Error::InvalidArgument(msg) => Status::invalid_argument(msg),
            Error::NotFound(msg) => Status::not_found(msg),
            Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
            Error::Aborted(msg) => Status::aborted(msg),
            Error::InventoryRefused(status) => Status::new(status.code(), status.message()),
            Error::Unavailable(msg) => Status::unavailable(msg),
            Error::Database(db) => {
                tracing::error!(error = %db, "database error");
                match db {
                    sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                        Status::unavailable("database unavailable")
                    }
                    _ => Status::internal("internal error"),
                }
            }
            Error::Mq(e) => {
                let reason = mq::describe(&e);
                tracing::warn!(error = %reason, "message broker error");
                match e {
                    mq::MqError::Client(_) => {
                        Status::unavailable(format!("message broker unavailable: {reason}"))
                    }
                    _ => Status::internal("internal error"),
                }
            }
            Error::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal("internal error")
            }
        }
    }
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
