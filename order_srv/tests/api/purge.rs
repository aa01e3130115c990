//! Barrier rows and RETURNED details are purged once the broker can no longer ask about
//! them; live deductions never are.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::helpers::spawn_stack;

const DAY: Duration = Duration::from_secs(24 * 3600);

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
    let left: Vec<String> = stack
        .sell_details()
        .await
        .into_iter()
        .map(|(sn, _)| sn)
        .collect();
    assert_eq!(left, ["OLD-D", "NEW-R"]);
    stack.stop().await;
}
