//! A client that hangs up cancels the gRPC call under its request: the gateway does not
//! keep the service working for nobody. Against a stand-in order_srv whose CartItemList
//! never answers and says when its call was dropped.

use std::time::Duration;

use gateway::startup::Application;
use proto::order::{
    self as pb,
    order_server::{Order, OrderServer},
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::helpers::gateway_config;

/// Says on its channel when it is dropped (its call was cancelled).
struct Dropped(mpsc::UnboundedSender<()>);

impl Drop for Dropped {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

struct Stuck(mpsc::UnboundedSender<()>);

type Answer<T> = Result<Response<T>, Status>;

fn no<T>() -> Answer<T> {
    Err(Status::unimplemented("not in this stand-in"))
}

#[tonic::async_trait]
impl Order for Stuck {
    async fn cart_item_list(
        &self,
        _: Request<pb::UserRequest>,
    ) -> Answer<pb::CartItemListResponse> {
        let _guard = Dropped(self.0.clone());
        std::future::pending::<()>().await;
        no()
    }
    async fn create_cart_item(
        &self,
        _: Request<pb::CreateCartItemRequest>,
    ) -> Answer<pb::CartItem> {
        no()
    }
    async fn update_cart_item(
        &self,
        _: Request<pb::UpdateCartItemRequest>,
    ) -> Answer<pb::CartItem> {
        no()
    }
    async fn delete_cart_item(&self, _: Request<pb::DeleteCartItemRequest>) -> Answer<pb::Empty> {
        no()
    }
    async fn create_order(&self, _: Request<pb::CreateOrderRequest>) -> Answer<pb::OrderInfo> {
        no()
    }
    async fn cancel_order(&self, _: Request<pb::CancelOrderRequest>) -> Answer<pb::OrderInfo> {
        no()
    }
    async fn order_list(&self, _: Request<pb::OrderListRequest>) -> Answer<pb::OrderListResponse> {
        no()
    }
    async fn order_detail(
        &self,
        _: Request<pb::OrderDetailRequest>,
    ) -> Answer<pb::OrderDetailResponse> {
        no()
    }
    async fn update_order_status(
        &self,
        _: Request<pb::UpdateOrderStatusRequest>,
    ) -> Answer<pb::OrderInfo> {
        no()
    }
    async fn upsert_goods(&self, _: Request<pb::Goods>) -> Answer<pb::Goods> {
        no()
    }
    async fn goods_list(&self, _: Request<pb::GoodsListRequest>) -> Answer<pb::GoodsListResponse> {
        no()
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_the_call_below_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let order_addr = listener.local_addr().expect("its address");
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrderServer::new(Stuck(dropped_tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut config = gateway_config();
    config.order.order_endpoint = format!("http://{order_addr}");
    // Long enough that only the hang-up can end the call within the test's wait.
    config.call_timeout = Duration::from_secs(120);
    let app = Application::build(&config)
        .await
        .expect("the gateway starts");
    let url = format!("http://{}", app.http_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let token = gateway::auth::Tokens::new(crate::helpers::JWT_SECRET.as_bytes(), "shop")
        .expect("a key")
        .issue(1, Duration::from_secs(60))
        .expect("signs")
        .0;

    // The client gives up after 300 ms and closes its connection.
    let gave_up = reqwest::Client::new()
        .get(format!("{url}/v1/cart/items"))
        .bearer_auth(token)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "the stand-in never answers");
    let cancelled = tokio::time::timeout(Duration::from_secs(30), dropped.recv()).await;
    assert!(
        matches!(cancelled, Ok(Some(()))),
        "the service's call was not cancelled after the client hung up"
    );
}
