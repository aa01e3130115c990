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

/// A JSON request body: an object (serde alone would also take an array of the fields in
/// order), of the shape `T`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        let axum::Json(value) =
            axum::Json::<serde_json::Value>::from_request(request, state).await?;
        if !value.is_object() {
            return Err(Problem::invalid("body", "the body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| Problem::invalid("body", e.to_string()))
    }
}

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

/// JSON integers as JSON Schema sees them: `7` and `7.0` are the same integer (JSON has
/// one number type, and a schema's `"type": "integer"` accepts both), while serde takes
/// only the first. For the integer fields of request bodies: `#[serde(deserialize_with)]`.
pub mod integer {
    use serde::{Deserialize, Deserializer, de::Error as _};

    /// The integer `number` holds, if it holds one that fits an `i64` exactly.
    fn exact(number: &serde_json::Number) -> Option<i64> {
        if let Some(n) = number.as_i64() {
            return Some(n);
        }
        let f = number.as_f64()?;
        // -2^63 and 2^63 as f64: i64's range, the top excluded.
        let fits = f.fract() == 0.0
            && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f);
        #[allow(clippy::cast_possible_truncation)]
        fits.then_some(f as i64)
    }

    fn int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
        number: serde_json::Number,
    ) -> Result<T, D::Error> {
        exact(&number)
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| D::Error::custom(format!("{number} is not an integer in range")))
    }

    pub fn i32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        int::<D, i32>(serde_json::Number::deserialize(d)?)
    }

    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        int::<D, i64>(serde_json::Number::deserialize(d)?)
    }

    pub fn option_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(int::<D, i32>)
            .transpose()
    }

    #[cfg(test)]
    mod tests {
        use serde::Deserialize;

        #[derive(Deserialize)]
        struct Body {
            #[serde(deserialize_with = "super::i32")]
            n: i32,
            #[serde(default, deserialize_with = "super::option_i32")]
            m: Option<i32>,
        }

        fn n(json: &str) -> Option<(i32, Option<i32>)> {
            serde_json::from_str::<Body>(json).ok().map(|b| (b.n, b.m))
        }

        #[test]
        fn an_integral_number_is_an_integer_whatever_its_spelling() {
            assert_eq!(n(r#"{"n": 7}"#), Some((7, None)));
            assert_eq!(n(r#"{"n": 7.0, "m": 1e3}"#), Some((7, Some(1000))));
            assert_eq!(n(r#"{"n": 7, "m": null}"#), Some((7, None)));
            assert_eq!(n(r#"{"n": 7.5}"#), None);
            assert_eq!(n(r#"{"n": 2147483648}"#), None);
            assert_eq!(n(r#"{"n": 1e300}"#), None);
            assert_eq!(n(r#"{"n": "7"}"#), None);
        }
    }
}
