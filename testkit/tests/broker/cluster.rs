//! Two master brokers in one cluster, as `devstack broker --brokers 2` (one process) or
//! `devstack broker` plus `devstack broker --join` (a process each) run them: topics have
//! queues on both, sends spread over both, and while one is stopped sends go to the
//! other once the client has isolated it.

use std::collections::BTreeMap;

use mq::{Mq, MqConfig};
use testkit::{
    BrokerSettings, EmbeddedBroker,
    testing::{PATIENCE, eventually, unique},
};

use crate::helpers::message;

/// Sends `n` messages and counts them by the broker that stored them.
async fn send_counting(
    producer: &rocketmq_client_rust::DefaultMQProducer,
    topic: &str,
    n: usize,
) -> BTreeMap<String, usize> {
    let mut by_broker = BTreeMap::new();
    for i in 0..n {
        let sent = producer
            .send(message(topic, &format!("m{i}")))
            .await
            .expect("a send succeeds")
            .expect("a sync send has a result");
        let broker = sent
            .message_queue
            .map(|q| q.broker_name().to_string())
            .unwrap_or_default();
        *by_broker.entry(broker).or_default() += 1;
    }
    by_broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_share_the_topics_and_one_carries_on_while_the_other_is_stopped() {
    let topic = unique("cluster");
    // broker-a with the name server, as `devstack broker`...
    let first = EmbeddedBroker::start(BrokerSettings {
        topics: Vec::new(),
        ..BrokerSettings::for_tests()
    })
    .await
    .expect("name server and broker-a");
    // ...and broker-b in a "process" of its own, as `devstack broker --join`.
    let second = EmbeddedBroker::start(BrokerSettings::another_master(
        first.namesrv_addr(),
        "broker-b",
    ))
    .await
    .expect("broker-b");
    testkit::broker::create_topics_on(first.namesrv_addr(), &[&topic], 4, 2)
        .await
        .expect("the topic on both brokers");

    let mq = Mq::new(&MqConfig::new(first.namesrv_addr()), "cluster-test").expect("client");
    let mut producer = mq.producer(&unique("cluster_producer"));
    producer.start().await.expect("producer");
    let both = send_counting(&producer, &topic, 40).await;
    assert_eq!(
        both.keys().map(String::as_str).collect::<Vec<_>>(),
        ["broker-a", "broker-b"],
        "sends spread over both masters: {both:?}"
    );

    // broker-b stops. The client does not retry a send whose connection failed on the
    // other master (rocketmq-client-rust 1.0: a transport error without a request stage
    // stops the retry loop), so the first sends that pick one of broker-b's queues fail;
    // each failure isolates broker-b, and from then on every send lands on broker-a.
    // (The services retry such a send themselves: `mq::unsent`.) Measured: 2 failed sends
    // in the first 0.25 s, none after.
    second.shutdown().await;
    eventually(
        PATIENCE,
        "the client to isolate the stopped broker",
        || async {
            let mut clean = true;
            for i in 0..10 {
                let sent = producer.send(message(&topic, &format!("probe{i}"))).await;
                clean &= matches!(sent, Ok(Some(_)));
            }
            clean.then_some(())
        },
    )
    .await;
    let alone = send_counting(&producer, &topic, 40).await;
    assert_eq!(alone.get("broker-a"), Some(&40), "{alone:?}");

    producer.shutdown().await;
    mq.shutdown().await;
    first.shutdown().await;
}
