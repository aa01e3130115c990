//! A broker restarted on the same store keeps what it stored.

use mq::{Mq, MqConfig};
use rocketmq_client_rust::ConsumeConcurrentlyStatus;
use testkit::{
    BrokerSettings, EmbeddedBroker,
    testing::{PATIENCE, eventually, unique},
};

use crate::helpers::{collecting_consumer, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_still_delivers_a_committed_but_unconsumed_message() {
    let store = tempfile::tempdir().expect("store dir");
    let topic = unique("restart");
    let settings = BrokerSettings {
        store_dir: Some(store.path().to_path_buf()),
        topics: vec![topic.clone()],
        ..BrokerSettings::for_tests()
    };

    let broker = EmbeddedBroker::start(settings.clone())
        .await
        .expect("first start");
    let mq = Mq::new(&MqConfig::new(broker.namesrv_addr()), "restart-producer").expect("client");
    let mut producer = mq.producer(&unique("restart_producer"));
    producer.start().await.expect("producer");
    producer
        .send(message(&topic, "survivor"))
        .await
        .expect("send");
    producer.shutdown().await;
    mq.shutdown().await;
    broker.shutdown().await;

    let broker = EmbeddedBroker::start(settings).await.expect("restart");
    let mq = Mq::new(&MqConfig::new(broker.namesrv_addr()), "restart-consumer").expect("client");
    let (mut consumer, received) =
        collecting_consumer(&mq, &unique("restart_group"), &topic, None, |_| {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
        .await;
    eventually(
        PATIENCE,
        "the message stored before the restart",
        || async { (!received.of("survivor").is_empty()).then_some(()) },
    )
    .await;
    consumer.shutdown().await;
    mq.shutdown().await;
    broker.shutdown().await;
}
