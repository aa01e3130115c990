//! Binds first (tests use port 0 and read the address), builds the clients and the
//! router, serves HTTP/1.1 until the shutdown future resolves, then drains.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{MatchedPath, Request},
    middleware::{self, Next},
    response::Response,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use observe::trace::Carrier;
use tokio::net::TcpListener;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::Instrument;

use crate::{auth::Tokens, backends::Backends, config::Config, limit::Limiter, routes};

/// How long a client has to send a request's head once it starts one.
pub const HEAD_WITHIN: Duration = Duration::from_secs(5);
/// How long a client has to send a request's body.
pub const BODY_WITHIN: Duration = Duration::from_secs(10);
/// How long requests in flight may finish after the shutdown signal.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// The budgets passed down as `grpc-timeout`.
#[derive(Clone, Copy, Debug)]
pub struct Budgets {
    /// `POST /v1/orders`.
    pub order: Duration,
    /// Every other call.
    pub call: Duration,
}

/// What every handler reaches.
#[derive(Clone)]
pub struct AppState {
    pub backends: Backends,
    pub tokens: Arc<Tokens>,
    pub limiter: Arc<Limiter>,
    pub payment_key: Arc<str>,
    pub budgets: Budgets,
    /// `Some(lifetime of a dev token)` when the dev routes are on.
    pub dev_token_ttl: Option<Duration>,
}

pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.http_addr).await.map_err(|e| {
            anyhow::anyhow!("GATEWAY_HTTP_ADDR: cannot bind {}: {e}", config.http_addr)
        })?;
        let state = AppState {
            backends: Backends::connect_lazy(
                &config.order.order_endpoint,
                &config.inventory.inventory_endpoint,
            )?,
            tokens: Arc::new(
                Tokens::new(config.jwt_secret.as_bytes(), &config.jwt_issuer)
                    .map_err(|e| anyhow::anyhow!("GATEWAY_JWT_SECRET: {e}"))?,
            ),
            limiter: Arc::new(Limiter::new(config.rate_per_user, config.rate_burst)),
            payment_key: config.payment_secret.as_str().into(),
            budgets: Budgets {
                order: config.order_timeout,
                call: config.call_timeout,
            },
            dev_token_ttl: config.dev_tokens.then_some(config.dev_token_ttl),
        };
        if config.dev_tokens {
            tracing::warn!("GATEWAY_DEV_TOKENS is on: anyone can get a token for any user");
        }
        let router = routes::router(state, config.body_limit, &config.cors_origins)
            .layer(RequestBodyTimeoutLayer::new(BODY_WITHIN))
            .layer(middleware::from_fn(traced));
        Ok(Self { listener, router })
    }

    pub fn http_addr(&self) -> SocketAddr {
        // A bound listener has an address; the fallback is never reached.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish (up to
    /// [`DRAIN_WITHIN`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let service = TowerToHyperService::new(self.router.clone());
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEAD_WITHIN)
                            .serve_connection(TokioIo::new(stream), service);
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors, most likely: wait instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        tracing::info!("shutting down: draining requests");
        if tokio::time::timeout(DRAIN_WITHIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still running at the drain deadline were cut");
        }
        Ok(())
    }
}

/// The span of one HTTP request: it continues the caller's W3C `traceparent` (or starts a
/// trace), so the gRPC calls below it, and everything they cause, are one trace.
async fn traced(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", |path| path.as_str())
        .to_owned();
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        user_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    Carrier::read(|field| {
        request
            .headers()
            .get(field)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    })
    .continue_in(&span);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.in_scope(|| tracing::info!(status = response.status().as_u16(), "answered"));
    } else {
        span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
    }
    response
}
