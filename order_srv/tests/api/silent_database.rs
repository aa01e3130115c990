//! order_srv's MySQL gone silent (packets held, no reset: a partition, not a crash) under
//! eight buyers: every CreateOrder in flight or started during the cut is answered by the
//! server within its budget, the first success comes soon after the heal, the pool is
//! whole afterwards and the audit holds. (`devstack chaos --partitions` cuts the real
//! link with nftables, for longer.)

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use proto::order as pb;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually, link::Link};

use crate::helpers::{create_order_request, order_config, spawn_stack_reaching};

/// One CreateOrder as its buyer saw it.
struct Call {
    started: Instant,
    answered: Instant,
    order_sn: Option<String>,
}

const BUYERS: i64 = 8;
const CUT: Duration = Duration::from_secs(20);
const BUDGET: Duration = Duration::from_secs(5);

#[sqlx::test(migrations = false)]
async fn create_order_answers_within_its_budget_while_its_database_is_silent(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let (link, through) = Link::to_mysql(&db).await.expect("link");
    let mut config = order_config();
    config.create_order_budget = BUDGET;
    config.db_max_connections = 16;
    let stack = spawn_stack_reaching(db, through, config, |_| {}).await;
    stack.goods(1, 100, 1_000_000).await;

    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut buyers = Vec::new();
    for user in 1..=BUYERS {
        let (mut client, calls, mut stopped) =
            (stack.order.clone(), calls.clone(), stopped.clone());
        buyers.push(tokio::spawn(async move {
            let mut cart_filled = false;
            let mut attempt = 0;
            while !*stopped.borrow_and_update() {
                if !cart_filled {
                    let added = client
                        .create_cart_item(pb::CreateCartItemRequest {
                            user_id: user,
                            goods_id: 1,
                            nums: 1,
                            checked: Some(true),
                        })
                        .await;
                    if added.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    cart_filled = true;
                }
                attempt += 1;
                let mut request = tonic::Request::new(pb::CreateOrderRequest {
                    request_id: format!("silent-{user}-{attempt}"),
                    ..create_order_request(user)
                });
                // The server's budget must answer, not this deadline.
                request.set_timeout(Duration::from_secs(60));
                let started = Instant::now();
                let answer = client.create_order(request).await;
                let order_sn = answer.ok().map(|order| order.into_inner().order_sn);
                cart_filled = cart_filled && order_sn.is_none();
                calls.lock().expect("calls").push(Call {
                    started,
                    answered: Instant::now(),
                    order_sn,
                });
            }
        }));
    }

    let succeeded_since = |since: Instant| {
        calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.started >= since && c.order_sn.is_some())
            .map(|c| c.answered)
            .min()
    };
    let start = Instant::now();
    eventually(PATIENCE, "orders before the cut", || async {
        succeeded_since(start).map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let cut_at = Instant::now();
    link.cut();
    tokio::time::sleep(CUT).await;
    link.heal();
    let healed_at = Instant::now();
    let first_success = eventually(PATIENCE, "an order after the heal", || async {
        succeeded_since(healed_at)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    for buyer in buyers {
        buyer.await.expect("buyer");
    }

    let calls = std::mem::take(&mut *calls.lock().expect("calls"));
    let during: Vec<&Call> = calls
        .iter()
        .filter(|c| c.answered > cut_at && c.started < healed_at)
        .collect();
    assert!(
        during.len() >= BUYERS as usize,
        "only {} calls met the cut",
        during.len()
    );
    let slowest = during
        .iter()
        .map(|c| c.answered - c.started)
        .max()
        .unwrap_or_default();
    // A second of slack for a loaded machine: the budget's timer fires on time, the
    // answer still has to be written and read.
    assert!(
        slowest <= BUDGET + Duration::from_secs(1),
        "a call met by the cut took {slowest:?}"
    );
    let after_heal = first_success - healed_at;
    assert!(
        after_heal <= Duration::from_secs(5),
        "first success {after_heal:?} after the heal"
    );

    // The pool is whole: nothing holds a slot once the buyers stopped.
    let pool = stack.service_pool.clone();
    eventually(PATIENCE, "every pooled connection idle", || async {
        (pool.size() as usize == pool.num_idle()).then_some(())
    })
    .await;

    let acknowledged: Vec<String> = calls.iter().filter_map(|c| c.order_sn.clone()).collect();
    let input = testkit::audit::AuditInput {
        initial_stock: Some([(1, 1_000_000)].into_iter().collect()),
        acknowledged,
        liveness: None,
    };
    // Calls cut in the middle are settled by their check-backs (and rollbacks) first.
    eventually(
        PATIENCE,
        "I1-I5 hold once the cut calls settled",
        || async {
            let verdicts = testkit::audit::audit(&stack.order_pool, &stack.inventory_pool, &input)
                .await
                .ok()?;
            testkit::audit::failed(&verdicts).is_empty().then_some(())
        },
    )
    .await;
    stack.stop().await;
}
