//! Barrier rows and RETURNED details are purged once the broker can no longer ask about
//! them; live deductions never are, and paid orders' only once settled.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::helpers::spawn_stack;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The order_sns that still have a stock_sell_detail row.
async fn detail_order_sns(stack: &crate::helpers::Stack) -> Vec<String> {
    let details = stack.sell_details().await;
    details.into_iter().map(|(sn, _)| sn).collect()
}

#[sqlx::test(migrations = false)]
async fn expired_barriers_and_returned_details_are_purged_and_live_ones_kept(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    for (order_sn, age_days) in [("OLD-1", 9), ("OLD-2", 8), ("NEW-1", 0)] {
        sqlx::query(
            "INSERT INTO tx_barrier (order_sn, outcome, created_at) \
             VALUES (?, 'aborted', NOW(6) - INTERVAL ? DAY)",
        )
        .bind(order_sn)
        .bind(age_days)
        .execute(&stack.order_pool)
        .await
        .expect("barrier");
    }
    for (order_sn, status, age_days) in [
        ("OLD-R", "RETURNED", 9),
        ("OLD-D", "DEDUCTED", 9),
        ("NEW-R", "RETURNED", 0),
    ] {
        sqlx::query(
            "INSERT INTO stock_sell_detail (order_sn, status, detail, updated_at) \
             VALUES (?, ?, '[]', NOW(6) - INTERVAL ? DAY)",
        )
        .bind(order_sn)
        .bind(status)
        .bind(age_days)
        .execute(&stack.inventory_pool)
        .await
        .expect("detail");
    }

    let barriers =
        service_db::purge_once(&stack.order_pool, order_srv::db::EXPIRED_BARRIERS, 7 * DAY)
            .await
            .expect("purge");
    let details = service_db::purge_once(
        &stack.inventory_pool,
        inventory_srv::db::EXPIRED_RETURNED_DETAILS,
        7 * DAY,
    )
    .await
    .expect("purge");

    assert_eq!((barriers, details), (2, 1));
    assert_eq!(stack.barrier("NEW-1").await.as_deref(), Some("aborted"));
    assert_eq!(stack.barrier("OLD-1").await, None);
    let left = detail_order_sns(&stack).await;
    assert_eq!(left, ["OLD-D", "NEW-R"]);
    stack.stop().await;
}

/// Paid orders' deductions, once confirmed for INVENTORY_SETTLE_AFTER, are settled: the
/// detail row goes and `stock_settled` holds its units, so stock_sell_detail stays bounded
/// while the audit (I1 with the settled units, I2 with the settled orders) still holds. A
/// deduction confirmed recently, or not yet, stays; a paid order's detail that vanished
/// without being settled is caught by the audit.
#[sqlx::test(migrations = false)]
async fn confirmed_deductions_are_settled_and_the_audit_still_holds(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.goods(2, 250, 10).await;
    let mut orders = Vec::new();
    for user in 1..=3 {
        stack.add_to_cart(user, 1, 2).await;
        stack.add_to_cart(user, 2, 1).await;
        let order = stack.create_order(user).await.expect("order");
        stack.pay(&order.order_sn).await.expect("paid");
        orders.push(order.order_sn);
    }
    let confirm = |sn: &str, days_ago: u32| {
        sqlx::query(
            "UPDATE stock_sell_detail SET confirmed_at = NOW(6) - INTERVAL ? DAY WHERE order_sn = ?",
        )
        .bind(days_ago)
        .bind(sn.to_owned())
        .execute(&stack.inventory_pool)
    };
    confirm(&orders[0], 8).await.expect("confirmed long ago");
    confirm(&orders[1], 0).await.expect("confirmed now");
    // A corrupt confirmed row, older still: left alone, and the round moves past it.
    sqlx::query(
        "INSERT INTO stock_sell_detail (order_sn, status, detail, confirmed_at) \
         VALUES ('BROKEN-1', 'DEDUCTED', 'not json', NOW(6) - INTERVAL 9 DAY)",
    )
    .execute(&stack.inventory_pool)
    .await
    .expect("corrupt row");

    // One row per batch: the first batch holds only the corrupt row.
    let mut batches = Vec::new();
    let settled = inventory_srv::stock::settle(&stack.inventory_pool, 7 * DAY, 1, |n| {
        batches.push(n);
    })
    .await
    .expect("settle");

    assert_eq!(settled, 1);
    assert_eq!(batches, [0, 1, 0]);
    let left = detail_order_sns(&stack).await;
    assert_eq!(
        left,
        [orders[1].clone(), orders[2].clone(), "BROKEN-1".into()]
    );
    sqlx::query("DELETE FROM stock_sell_detail WHERE order_sn = 'BROKEN-1'")
        .execute(&stack.inventory_pool)
        .await
        .expect("cleaned up");
    let totals: Vec<(i32, i64, i64)> =
        sqlx::query_as("SELECT goods_id, nums, orders FROM stock_settled ORDER BY goods_id")
            .fetch_all(&stack.inventory_pool)
            .await
            .expect("settled");
    assert_eq!(totals, [(1, 2, 1), (2, 1, 1)]);
    assert_eq!((stack.stock(1).await, stack.stock(2).await), (4, 7));
    stack.audit(&[(1, 10), (2, 10)], &orders).await;
    // Settled once: a second run finds nothing.
    let again = inventory_srv::stock::settle(&stack.inventory_pool, 7 * DAY, 500, |_| {})
        .await
        .expect("settle");
    assert_eq!(again, 0);

    // A paid order's detail deleted without settling it: its units are nowhere.
    sqlx::query("DELETE FROM stock_sell_detail WHERE order_sn = ?")
        .bind(&orders[2])
        .execute(&stack.inventory_pool)
        .await
        .expect("delete");
    let input = testkit::audit::AuditInput {
        initial_stock: Some([(1, 10), (2, 10)].into_iter().collect()),
        acknowledged: orders.clone(),
        liveness: None,
    };
    let verdicts = testkit::audit::audit(&stack.order_pool, &stack.inventory_pool, &input)
        .await
        .expect("audit");
    assert_eq!(
        testkit::audit::failed(&verdicts),
        ["I1 conservation", "I2 agreement"],
        "{}",
        testkit::audit::report(&verdicts)
    );
    stack.stop().await;
}
