//! Typed configuration from environment variables; a bad value fails fast naming it.
//! Secrets are never printed (`hide_env_values`, and `Debug` is not derived).

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use observe::service::{InventoryEndpoint, OrderEndpoint, TelemetryArgs};

/// The shortest secret accepted: HS256 and HMAC-SHA256 keys shorter than the hash (32
/// bytes) are weaker than the algorithm (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Everything `gateway` reads from its environment.
#[derive(Clone, Parser)]
#[command(
    name = "gateway",
    about = "Web gateway: HTTP/JSON in front of order_srv and inventory_srv"
)]
pub struct Config {
    /// Address the HTTP server binds (port 0 picks a free port).
    #[arg(long, env = "GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    #[command(flatten)]
    pub order: OrderEndpoint,

    /// Where inventory_srv is (`INVENTORY_ENDPOINT`), for live stock next to the goods.
    #[command(flatten)]
    pub inventory: InventoryEndpoint,

    /// The HS256 key of the buyers' tokens (`Authorization: Bearer <JWT>`), at least 32
    /// bytes. The identity provider signs with it; so does the dev token route.
    #[arg(long, env = "GATEWAY_JWT_SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: String,

    /// The `iss` every token must carry.
    #[arg(long, env = "GATEWAY_JWT_ISSUER", default_value = "shop")]
    pub jwt_issuer: String,

    /// The payment provider's HMAC-SHA256 key for callbacks, at least 32 bytes.
    #[arg(long, env = "GATEWAY_PAYMENT_SECRET", hide_env_values = true, value_parser = secret)]
    pub payment_secret: String,

    /// Demo only: `POST /v1/dev/token` hands out a token for any user id, and
    /// `POST /v1/dev/orders/{order_sn}/pay` pays the caller's order without a provider.
    /// Off unless set: with it anyone can act as anyone.
    #[arg(long, env = "GATEWAY_DEV_TOKENS", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_tokens: bool,

    /// How long a dev token lives.
    #[arg(long, env = "GATEWAY_DEV_TOKEN_TTL", default_value = "12h", value_parser = humantime::parse_duration)]
    pub dev_token_ttl: Duration,

    /// Origins allowed to call the API from a browser on another origin, comma-separated
    /// (`https://shop.example`); empty means no CORS headers at all (the demo page is
    /// served from the gateway's own origin and needs none).
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Requests per second one buyer may make (a token bucket per user id).
    #[arg(long, env = "GATEWAY_RATE_PER_USER", default_value_t = 20)]
    pub rate_per_user: u32,

    /// How many requests a buyer may make at once above the steady rate.
    #[arg(long, env = "GATEWAY_RATE_BURST", default_value_t = 40)]
    pub rate_burst: u32,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "GATEWAY_BODY_LIMIT", default_value_t = 16 * 1024)]
    pub body_limit: usize,

    /// The budget of `POST /v1/orders`, passed to order_srv as `grpc-timeout` (its own
    /// budget, 5 s by default, is the shorter one unless this is set lower).
    #[arg(long, env = "GATEWAY_ORDER_TIMEOUT", default_value = "6s", value_parser = humantime::parse_duration)]
    pub order_timeout: Duration,

    /// The budget of every other route's gRPC calls.
    #[arg(long, env = "GATEWAY_CALL_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

fn secret(value: &str) -> Result<String, String> {
    if value.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "must be at least {MIN_SECRET_BYTES} bytes (got {})",
            value.len()
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Config;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_short_secret_is_refused_naming_the_variable() {
        let error =
            Config::try_parse_from(["gateway", "--jwt-secret", "short", "--payment-secret", KEY])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(error.contains("jwt-secret"), "{error}");
        assert!(error.contains("at least 32 bytes"), "{error}");
    }

    #[test]
    fn defaults_leave_dev_tokens_and_cors_off() {
        let config =
            Config::try_parse_from(["gateway", "--jwt-secret", KEY, "--payment-secret", KEY])
                .expect("parses");
        assert!(!config.dev_tokens);
        assert!(config.cors_origins.is_empty());
    }
}
