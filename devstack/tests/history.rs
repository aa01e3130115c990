//! The bench's history (`devstack bench --history N`) is what the services themselves would
//! have written: on the seeded rows alone, the audit's agreement (I2: DEDUCTED <=> the order
//! is open), exactly-once (I5: each deduction is its order's goods) and the rest hold, and
//! the heavy buyer and the recent unpaid orders the probes use are there. Needs MariaDB on
//! DATABASE_URL (scripts/test starts it).

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

#[sqlx::test(migrations = false)]
async fn seeded_history_holds_the_invariants_the_services_keep(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let name = format!("shop_history_{}", std::process::id());
    let inventory = format!("{name}_inventory");
    testkit::mysql::recreate_databases(&db, &[&inventory], "DATABASE_URL")
        .await
        .expect("inventory database");
    let order_pool = service_db::connect(db.clone(), 8)
        .await
        .expect("order pool");
    let inventory_pool = service_db::connect(db.clone().database(&inventory), 8)
        .await
        .expect("inventory pool");
    order_srv::MIGRATOR
        .run(&order_pool)
        .await
        .expect("migrated");
    inventory_srv::MIGRATOR
        .run(&inventory_pool)
        .await
        .expect("migrated");

    let history = devstack::history::seed(&order_pool, &inventory_pool, 5_000, 50)
        .await
        .expect("seeded");

    assert_eq!((history.orders, history.heavy_orders), (5_000, 500));
    let count = |sql: &'static str, pool| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .expect("count")
    };
    // 5,000 past orders and 2,000 recent ones, 100 never-placed orders' barriers and
    // tombstones; half the recent ones unpaid.
    assert_eq!(
        count("SELECT COUNT(*) FROM order_info", &order_pool).await,
        7_000
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM tx_barrier", &order_pool).await,
        7_100
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM stock_sell_detail", &inventory_pool).await,
        7_100
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM order_info WHERE status = 'WAIT_BUYER_PAY'",
            &order_pool
        )
        .await,
        1_000
    );
    let heavy: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM order_info WHERE user_id = ?")
        .bind(devstack::history::HEAVY_USER)
        .fetch_one(&order_pool)
        .await
        .expect("heavy buyer");
    assert_eq!(heavy, 500);
    // Inside six days and 40 minutes, and nothing stamped in the future (a close, a
    // payment, a confirmation, a detail's change).
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM order_info WHERE created_at < NOW(6) - INTERVAL 6 DAY - INTERVAL 41 MINUTE \
             OR created_at > NOW(6) OR closed_at > NOW(6) OR pay_time > NOW(6)",
            &order_pool
        )
        .await,
        0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM stock_sell_detail WHERE updated_at > NOW(6) OR confirmed_at > NOW(6)",
            &inventory_pool
        )
        .await,
        0
    );

    let input = testkit::audit::AuditInput {
        initial_stock: None,
        acknowledged: Vec::new(),
        liveness: None,
    };
    let verdicts = testkit::audit::audit(&order_pool, &inventory_pool, &input)
        .await
        .expect("audit");
    testkit::audit::assert_all_hold(&verdicts);
    inventory_pool.close().await;
    testkit::mysql::drop_databases(&db, &[&inventory], "DATABASE_URL")
        .await
        .expect("dropped");
}
