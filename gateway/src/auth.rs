//! Who is calling: the buyer's identity comes from `Authorization: Bearer <JWT>` only
//! (HS256, `sub` = the user id, `iss` and `exp` required), never from a body or a query,
//! so one buyer can never name another's cart or order. The [`Buyer`] extractor also
//! applies the per-user rate limit ([`crate::limit`]).

use std::time::Duration;

use axum::{extract::FromRequestParts, http::request::Parts};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{problem::Problem, startup::AppState};

/// A token's claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string (JWT's `sub` is a string).
    pub sub: String,
    pub iss: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    pub iat: u64,
}

/// The keys and rules of buyers' tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
}

impl Tokens {
    /// Fails for an empty secret (the configuration refuses one shorter than 32 bytes).
    pub fn new(secret: &[u8], issuer: &str) -> anyhow::Result<Self> {
        // Only HS256: a token naming another algorithm (or `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 30;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
            issuer: issuer.to_owned(),
        })
    }

    /// A token for `user_id`, valid for `ttl` (the dev token route; an identity provider
    /// signs the same claims with the same key).
    pub fn issue(&self, user_id: i64, ttl: Duration) -> Result<(String, DateTime<Utc>), Problem> {
        let now = Utc::now();
        let expires = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .ok_or_else(|| Problem::invalid("ttl", "the token lifetime is out of range"))?;
        let claims = Claims {
            sub: user_id.to_string(),
            iss: self.issuer.clone(),
            exp: u64::try_from(expires.timestamp()).unwrap_or(0),
            iat: u64::try_from(now.timestamp()).unwrap_or(0),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| {
            tracing::error!(error = %e, "signing a token failed");
            Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the gateway's log has the cause",
            )
        })?;
        Ok((token, expires))
    }

    /// The user id a valid token names.
    pub fn verify(&self, token: &str) -> Result<i64, Problem> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Problem::unauthenticated(format!("the bearer token is not valid: {e}")))?;
        data.claims
            .sub
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| Problem::unauthenticated("the token's sub is not a user id"))
    }
}

/// The authenticated buyer of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buyer {
    pub user_id: i64,
}

impl FromRequestParts<AppState> for Buyer {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let token = bearer(parts)?;
        let user_id = state.tokens.verify(token)?;
        state.limiter.admit(user_id)?;
        tracing::Span::current().record("user_id", user_id);
        Ok(Self { user_id })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(parts: &Parts) -> Result<&str, Problem> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthenticated("an Authorization: Bearer token is required"))?
        .to_str()
        .map_err(|_| Problem::unauthenticated("the Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Problem::unauthenticated(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Tokens;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_names_its_user() {
        let tokens = Tokens::new(KEY, "shop").expect("a key");
        let (token, _) = tokens.issue(42, Duration::from_secs(60)).expect("signs");
        assert_eq!(tokens.verify(&token).ok(), Some(42));
    }

    #[test]
    fn tokens_of_another_key_issuer_or_past_their_expiry_are_refused() {
        let tokens = Tokens::new(KEY, "shop").expect("a key");
        let (other_key, _) = Tokens::new(b"another key of thirty-two bytes!!", "shop")
            .expect("a key")
            .issue(42, Duration::from_secs(60))
            .expect("signs");
        assert!(tokens.verify(&other_key).is_err());
        let (other_issuer, _) = Tokens::new(KEY, "elsewhere")
            .expect("a key")
            .issue(42, Duration::from_secs(60))
            .expect("signs");
        assert!(tokens.verify(&other_issuer).is_err());
        // Expired well past the leeway.
        let claims = super::Claims {
            sub: "42".into(),
            iss: "shop".into(),
            exp: 1_000_000,
            iat: 999_000,
        };
        let expired = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(KEY).expect("a key"),
        )
        .expect("signs");
        assert!(tokens.verify(&expired).is_err());
        assert!(tokens.verify("not.a.token").is_err());
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let tokens = Tokens::new(KEY, "shop").expect("a key");
        // {"alg":"none"} . {"sub":"42","iss":"shop","exp":9999999999,"iat":0} . (no signature)
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiIsImlzcyI6InNob3AiLCJleHAiOjk5OTk5OTk5OTksImlhdCI6MH0.";
        assert!(tokens.verify(unsigned).is_err());
    }
}
