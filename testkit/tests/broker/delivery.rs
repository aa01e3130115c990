//! Redelivery, dead letters and delays.

use std::time::{Duration, Instant};

use rocketmq_client_rust::ConsumeConcurrentlyStatus;
use testkit::{PATIENCE, eventually, unique};

use crate::helpers::{collecting_consumer, message, mq, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconsume_later_redelivers_with_an_incremented_reconsume_count() {
    let mq = mq("redeliver-test");
    let topic = topic(&mq, "redeliver").await;
    let (mut consumer, received) =
        collecting_consumer(&mq, &unique("redeliver_group"), &topic, None, |d| {
            if d.reconsume_times == 0 {
                ConsumeConcurrentlyStatus::ReconsumeLater
            } else {
                ConsumeConcurrentlyStatus::ConsumeSuccess
            }
        })
        .await;
    let mut producer = mq.producer(&unique("redeliver_producer"));
    producer.start().await.expect("producer");
    producer.send(message(&topic, "again")).await.expect("send");

    let deliveries = eventually(PATIENCE, "the redelivery", || async {
        let seen = received.of("again");
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    assert_eq!(deliveries[0].reconsume_times, 0);
    assert_eq!(deliveries[1].reconsume_times, 1);
    consumer.shutdown().await;
    producer.shutdown().await;
    mq.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_max_reconsume_count_the_message_lands_in_the_dead_letter_topic() {
    let mq = mq("dlq-test");
    let topic = topic(&mq, "dlq").await;
    let group = unique("dlq_group");
    let (mut consumer, received) = collecting_consumer(&mq, &group, &topic, Some(1), |_| {
        ConsumeConcurrentlyStatus::ReconsumeLater
    })
    .await;
    let mut producer = mq.producer(&unique("dlq_producer"));
    producer.start().await.expect("producer");
    producer
        .send(message(&topic, "poison"))
        .await
        .expect("send");

    eventually(PATIENCE, "the retry", || async {
        (received.of("poison").len() >= 2).then_some(())
    })
    .await;
    // The broker creates the dead-letter topic with the first dead letter; a reader that
    // subscribes before that finds it at its next rebalance.
    let dlq = format!("%DLQ%{group}");
    let (mut dead, dead_letters) =
        collecting_consumer(&mq, &unique("dlq_reader"), &dlq, None, |_| {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
        .await;
    eventually(PATIENCE, "the dead letter", || async {
        (!dead_letters.of("poison").is_empty()).then_some(())
    })
    .await;
    assert_eq!(received.of("poison").len(), 2, "retried beyond the max");
    dead.shutdown().await;
    consumer.shutdown().await;
    producer.shutdown().await;
    mq.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_is_delivered_no_earlier_than_its_delay() {
    let mq = mq("delay-test");
    let topic = topic(&mq, "delay").await;
    let (mut consumer, received) =
        collecting_consumer(&mq, &unique("delay_group"), &topic, None, |_| {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
        .await;
    let mut producer = mq.producer(&unique("delay_producer"));
    producer.start().await.expect("producer");

    // Level 3 of the test broker's levels is 3 s.
    let sent_level = Instant::now();
    let mut by_level = message(&topic, "by-level");
    by_level.set_delay_time_level(3);
    producer.send(by_level).await.expect("send by level");
    let sent_secs = Instant::now();
    let by_secs = rocketmq_model::common::message::message_single::Message::builder()
        .topic(topic.as_str())
        .body(b"by-secs".to_vec())
        .delay_secs(2)
        .build()
        .expect("message");
    producer.send(by_secs).await.expect("send by secs");

    let level = eventually(PATIENCE, "the message delayed by level", || async {
        received.of("by-level").first().cloned()
    })
    .await;
    let secs = eventually(PATIENCE, "the message delayed by seconds", || async {
        received.of("by-secs").first().cloned()
    })
    .await;
    assert!(
        level.at - sent_level >= Duration::from_millis(2900),
        "level delay not honoured"
    );
    assert!(
        secs.at - sent_secs >= Duration::from_millis(1900),
        "delay_secs not honoured"
    );
    consumer.shutdown().await;
    producer.shutdown().await;
    mq.shutdown().await;
}

/// A steady stream of delayed messages, faster than the timer's old per-second batches
/// (64 in, 64 out) and without a pause for its enqueue to catch up: every message comes
/// out, close to its time. Before the broker's timer was patched
/// (vendor/rocketmq-store/PATCHED.md) none did: delivery waited for an enqueue cursor that
/// a steady stream never lets catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_delayed_messages_is_delivered_on_time() {
    const RATE: u64 = 150;
    const SECONDS: u64 = 20;
    const DELAY: Duration = Duration::from_secs(3);
    const LATE: Duration = Duration::from_secs(5);
    let mq = mq("delay-stream-test");
    let topic = topic(&mq, "delay_stream").await;
    let (mut consumer, received) =
        collecting_consumer(&mq, &unique("delay_stream_group"), &topic, None, |_| {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
        .await;
    let mut producer = mq.producer(&unique("delay_stream_producer"));
    producer.start().await.expect("producer");

    let total = RATE * SECONDS;
    let started = Instant::now();
    let mut sent = Vec::new();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..total {
        // Paced by the clock, not by the sends: a slow send does not slow the stream.
        let due = started + Duration::from_millis(i * 1000 / RATE);
        tokio::time::sleep_until(due.into()).await;
        let producer = producer.clone();
        let body = format!("m{i}");
        let message = rocketmq_model::common::message::message_single::Message::builder()
            .topic(topic.as_str())
            .body(body.clone().into_bytes())
            .delay_secs(DELAY.as_secs())
            .build()
            .expect("message");
        sent.push((body, Instant::now()));
        sends.spawn(async move { producer.send(message).await.map(|_| ()) });
    }
    while let Some(sent) = sends.join_next().await {
        sent.expect("send task").expect("send");
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    assert!(rate >= RATE as f64 * 0.9, "sent only {rate:.0}/s");

    let last_due = sent.last().map(|(_, at)| *at + DELAY).expect("sent");
    let deadline = last_due + PATIENCE;
    while (received.all().len() as u64) < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} delayed messages delivered {:?} after the last was due",
            received.all().len(),
            last_due.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arrived: std::collections::HashMap<String, Instant> =
        received.all().into_iter().map(|d| (d.body, d.at)).collect();
    let mut lateness: Vec<Duration> = sent
        .iter()
        .map(|(body, at)| {
            let got = arrived.get(body).expect("delivered");
            assert!(
                *got - *at >= DELAY - Duration::from_millis(100),
                "{body} came early"
            );
            (*got - *at).saturating_sub(DELAY)
        })
        .collect();
    lateness.sort();
    let worst = lateness.last().copied().unwrap_or_default();
    assert!(
        worst <= LATE,
        "the latest delayed message came {worst:?} after its time"
    );
    consumer.shutdown().await;
    producer.shutdown().await;
    mq.shutdown().await;
}
