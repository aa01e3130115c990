# Builds inventory_srv, order_srv, the gateway and the grpc_health probe from this workspace.
#   docker build -t shop .        (docker-compose.yml does this for you)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p inventory_srv -p order_srv -p gateway -p grpc_health \
 && mkdir -p /out \
 && cp target/release/inventory_srv target/release/order_srv target/release/gateway \
       target/release/grpc_health /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# RUST_LOG is left unset: the services' default filter keeps a healthy system free of
# WARN and ERROR lines (observe::telemetry::DEFAULT_FILTER). Set it to see more.
# docker-compose.yml picks the binary per service.
CMD ["order_srv"]
