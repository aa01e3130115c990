//! What `grpcurl -plaintext <addr> list` shows: each service lists its own API, health
//! and reflection, and nothing it does not serve, over both reflection protocols.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic::transport::Channel;

use crate::helpers::spawn_stack;

async fn channel(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// The service list over one reflection protocol version (`v1` or `v1alpha`: the same
/// messages in two packages).
macro_rules! list_services {
    ($version:ident, $addr:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel($addr).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let response = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection call")
            .into_inner()
            .message()
            .await
            .expect("a response")
            .expect("not empty");
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                sorted(list.service.into_iter().map(|s| s.name))
            }
            other => panic!("unexpected reflection answer: {other:?}"),
        }
    }};
}

fn sorted(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.collect();
    names.sort();
    names
}

#[sqlx::test(migrations = false)]
async fn each_service_lists_only_its_api_health_and_reflection_in_v1_and_v1alpha(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    for (addr, api) in [
        (stack.order_addr, "order.v1.Order"),
        (stack.inventory_addr, "inventory.v1.Inventory"),
    ] {
        assert_eq!(
            list_services!(v1, addr),
            sorted(
                [
                    api,
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection"
                ]
                .into_iter()
                .map(String::from)
            ),
            "v1 reflection on the {api} port"
        );
        assert_eq!(
            list_services!(v1alpha, addr),
            sorted(
                [
                    api,
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1alpha.ServerReflection"
                ]
                .into_iter()
                .map(String::from)
            ),
            "v1alpha reflection on the {api} port"
        );
    }
    stack.stop().await;
}
