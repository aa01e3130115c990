//! What `grpcurl -plaintext <addr> list` shows: both services expose reflection and health.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::spawn_stack;

async fn list_services(addr: std::net::SocketAddr) -> Vec<String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("not empty");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

#[sqlx::test(migrations = false)]
async fn both_services_list_their_api_health_and_reflection(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    let order = list_services(stack.order_addr).await;
    let inventory = list_services(stack.inventory_addr).await;
    for (services, api) in [
        (&order, "order.v1.Order"),
        (&inventory, "inventory.v1.Inventory"),
    ] {
        assert!(
            services.iter().any(|s| s == api),
            "{api} missing from {services:?}"
        );
        assert!(
            services.iter().any(|s| s == "grpc.health.v1.Health"),
            "{services:?}"
        );
        assert!(
            services
                .iter()
                .any(|s| s == "grpc.reflection.v1.ServerReflection"),
            "{services:?}"
        );
    }
    stack.stop().await;
}
