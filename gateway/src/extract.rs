//! axum's JSON, path and query extractors with their rejections as problem+json: a
//! malformed body, a path segment that is not a number or a body over the limit answers
//! like every other error of the gateway.

use axum::{
    extract::{
        FromRequest, FromRequestParts,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::StatusCode,
};

use crate::problem::Problem;

/// A JSON request body.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

/// Query parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::gateway(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                rejection.body_text(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::gateway(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "NOT_JSON",
                "the body must be JSON (Content-Type: application/json)",
            ),
            // A body of the wrong shape is the caller's mistake like any other: 400.
            _ => Problem::invalid("body", rejection.body_text()),
        }
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Problem::invalid("path", rejection.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Problem::invalid("query", rejection.body_text())
    }
}
