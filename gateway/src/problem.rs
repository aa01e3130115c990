//! One error type for every route, rendered as RFC 9457 `application/problem+json`.
//!
//! A gRPC status becomes an HTTP status by its code (the table in `docs/gateway.md`);
//! the `google.rpc.ErrorInfo` reason and domain travel as extension members, a
//! `google.rpc.BadRequest`'s field violations as `invalid_params`. Where the services'
//! retry table says "retry" (UNAVAILABLE, ABORTED) the answer carries `Retry-After`.
//! INTERNAL and UNKNOWN never carry the service's message to the caller: it is logged
//! with the trace id, and the caller gets a generic detail.

use std::collections::BTreeMap;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;
use utoipa::ToSchema;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long a caller should wait before retrying an answer that says "retry".
pub const RETRY_AFTER_SECS: u64 = 1;

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemBody {
    /// A URI naming the kind of problem: `urn:shop:problem:<reason>` when the service
    /// gave a reason, `about:blank` otherwise.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem (the HTTP status's phrase).
    pub title: String,
    /// The HTTP status code, repeated.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The machine-readable reason (`google.rpc.ErrorInfo.reason`), e.g. `CART_EMPTY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whose reason it is (`order.v1`, `inventory.v1`, `gateway`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The reason's details (e.g. `goods_id`, `wanted`, `available`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The fields that were wrong, for a 400.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_params: Vec<InvalidParam>,
}

/// One wrong field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

/// An error answer: a problem body, and headers that go with its status.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    /// Boxed: handlers return `Result<_, Problem>`, and the Ok path stays small.
    body: Box<ProblemBody>,
    retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ProblemBody {
                kind: "about:blank".into(),
                title: status.canonical_reason().unwrap_or("Error").into(),
                status: status.as_u16(),
                detail: detail.into(),
                reason: None,
                domain: None,
                metadata: BTreeMap::new(),
                invalid_params: Vec::new(),
            }),
            retry_after: None,
        }
    }

    /// A problem of the gateway's own with a machine-readable reason.
    pub fn gateway(status: StatusCode, reason: &str, detail: impl Into<String>) -> Self {
        Self::new(status, detail).with_reason("gateway", reason)
    }

    /// 400 naming the wrong field.
    pub fn invalid(field: &str, why: impl Into<String>) -> Self {
        let why = why.into();
        let mut problem = Self::gateway(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", why.clone());
        problem.body.invalid_params.push(InvalidParam {
            name: field.into(),
            reason: why,
        });
        problem
    }

    /// 401 with the `WWW-Authenticate` challenge a bearer route answers with.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::gateway(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", detail)
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn with_reason(mut self, domain: &str, reason: &str) -> Self {
        self.body.kind = format!("urn:shop:problem:{}", reason.to_ascii_lowercase());
        self.body.reason = Some(reason.into());
        self.body.domain = Some(domain.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &ProblemBody {
        &self.body
    }
}

/// The HTTP status for a gRPC code, and whether the services' table says "retry".
pub fn http_status(code: Code) -> (StatusCode, bool) {
    match code {
        Code::Ok => (StatusCode::OK, false),
        Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, false),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, false),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, false),
        Code::NotFound => (StatusCode::NOT_FOUND, false),
        Code::AlreadyExists | Code::FailedPrecondition => (StatusCode::CONFLICT, false),
        Code::Aborted => (StatusCode::CONFLICT, true),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, true),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, true),
        // The deadline passed down as grpc-timeout ran out: the outcome is unknown.
        Code::DeadlineExceeded | Code::Cancelled => (StatusCode::GATEWAY_TIMEOUT, true),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, false),
        Code::Internal | Code::Unknown | Code::DataLoss => {
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        }
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        let (http, retry) = http_status(status.code());
        if http == StatusCode::INTERNAL_SERVER_ERROR {
            // The message may hold SQL or a stack of causes: the log has it, the caller
            // gets the trace id to quote.
            tracing::error!(code = ?status.code(), message = status.message(), "a service failed");
            return Self::new(http, "internal error; the gateway's log has the cause");
        }
        let mut problem = Self::new(http, status.message());
        if let Some(info) = status.get_details_error_info() {
            problem = problem.with_reason(&info.domain, &info.reason);
            problem.body.metadata = info.metadata.into_iter().collect();
        }
        if let Some(bad) = status.get_details_bad_request() {
            problem.body.invalid_params = bad
                .field_violations
                .into_iter()
                .map(|v| InvalidParam {
                    name: v.field,
                    reason: v.description,
                })
                .collect();
        }
        if retry {
            problem.retry_after = Some(RETRY_AFTER_SECS);
        }
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(*self.body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shop\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    #[test]
    fn a_reason_and_its_metadata_become_extension_members() {
        let status = tonic::Status::with_error_details(
            Code::FailedPrecondition,
            "not enough stock",
            ErrorDetails::with_error_info(
                "INSUFFICIENT_STOCK",
                "inventory.v1",
                [("goods_id".to_owned(), "7".to_owned())],
            ),
        );
        let problem = Problem::from(status);
        assert_eq!(problem.status(), StatusCode::CONFLICT);
        assert_eq!(problem.body().reason.as_deref(), Some("INSUFFICIENT_STOCK"));
        assert_eq!(problem.body().domain.as_deref(), Some("inventory.v1"));
        assert_eq!(problem.body().kind, "urn:shop:problem:insufficient_stock");
        assert_eq!(
            problem.body().metadata.get("goods_id").map(String::as_str),
            Some("7")
        );
        assert_eq!(problem.retry_after, None);
    }

    #[test]
    fn field_violations_become_invalid_params() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "bad mobile",
            ErrorDetails::with_bad_request_violation("mobile", "too long"),
        );
        let problem = Problem::from(status);
        assert_eq!(problem.status(), StatusCode::BAD_REQUEST);
        assert_eq!(problem.body().invalid_params.len(), 1);
        assert_eq!(problem.body().invalid_params[0].name, "mobile");
    }

    #[test]
    fn internal_errors_never_carry_the_services_message() {
        let problem = Problem::from(tonic::Status::internal("SELECT secret FROM t failed"));
        assert_eq!(problem.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!problem.body().detail.contains("secret"));
    }

    #[test]
    fn retryable_codes_say_when_to_come_back() {
        for code in [Code::Unavailable, Code::Aborted] {
            let response = Problem::from(tonic::Status::new(code, "later")).into_response();
            assert_eq!(
                response.headers().get(header::RETRY_AFTER),
                Some(&HeaderValue::from(RETRY_AFTER_SECS)),
                "{code:?}"
            );
            assert_eq!(
                response.headers().get(header::CONTENT_TYPE),
                Some(&HeaderValue::from_static(PROBLEM_JSON))
            );
        }
    }
}
